"""Grade a folder of submissions in parallel and write the CSV and JSON results.

Each worker process builds one ``Judge`` (it runs the solution notebook once), then for each
submission: reads and validates the file, reserves a uid no other batch or process uses, makes a
memory cgroup, starts a fresh sandboxed kernel, runs the student's cells with the trusted graded
cells restored at the places of the student's check cells, kills the kernel (its cgroup and uid),
and judges every graded cell in its own process from the kernel's records. A submission never stops
the batch: anything that goes wrong becomes a row with zeros and a reason in the error column.
Rows are written as they come (``LESSON.csv`` and ``LESSON.partial.jsonl``), so a crash loses
nothing already graded; at the end the CSV is rewritten in file order and ``LESSON.json`` is
written.
"""

from __future__ import annotations

import concurrent.futures
import csv
import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..paths import ROOT
from .lesson import Lesson, SubmissionError, kernel_plan, load_lesson, read_submission
from .sandbox import can_isolate

FIRST_UID, UID_COUNT = 61000, 4000


@dataclass
class Settings:
    cell_timeout: float = 60.0  # seconds per exercise cell and per graded (check) cell
    other_cell_timeout: float = 300.0  # seconds per other cell (loading the model...)
    submission_timeout: float = 900.0  # seconds for everything one submission runs
    start_timeout: float = 90.0  # seconds for the kernel to start
    memory_gb: float = 6.0  # cap of the kernel: its address space (RLIMIT_AS) and, where a
    #                                    cgroup can be made, the memory of its whole process tree
    file_mb: int = 512  # largest file the kernel may write (RLIMIT_FSIZE)
    workers: int = 0  # 0: one per CPU core
    isolate: bool = True  # namespaces + own uid when running as root on Linux


@dataclass
class CellGrade:
    points: float
    max_points: float
    passed: bool
    message: str
    exercise: str
    kind: str


@dataclass
class SubmissionResult:
    submission: str
    sha256: str = ""
    error: str = ""
    total: float = 0.0
    max_points: float = 0.0
    cells: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    output_chars: int = 0
    isolation: str = ""


# ---------------------------------------------------------------- worker side

_WORKER: dict = {}


def _init_worker(
    lesson_path: str, settings: Settings, temp_root: str, model_cache: str, seed: int
) -> None:
    import torch

    torch.set_num_threads(1)
    from .judge import Judge

    lesson = load_lesson(lesson_path)
    _WORKER.update(
        lesson=lesson,
        judge=Judge(lesson),
        settings=settings,
        temp_root=temp_root,
        model_cache=model_cache,
        seed=seed,
        uids=UidPool(),
    )


class UidPool:
    """Unprivileged uids for kernels, safe across concurrent batches: a uid is taken with an
    exclusive lock on ``<folder>/<uid>.lock`` (released by the system if the holder dies), and only
    when no process of that uid exists and no account has it. Killing "every process of the uid"
    therefore reaches only the kernel this batch started."""

    def __init__(self, folder: str | None = None, first: int = FIRST_UID, count: int = UID_COUNT):
        self.first, self.count = first, count
        if folder is None:
            base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
            folder = os.path.join(base, "rsl-grading-uids")
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            raise RuntimeError(
                f"{folder}: not a private folder of this user; refusing to use it for uid locks"
            )
        self.folder = folder

    def acquire(self) -> tuple[int, int]:
        """(uid, lock descriptor); ``release(lock)`` gives the uid back."""
        import pwd

        for uid in range(self.first, self.first + self.count):
            fd = os.open(
                os.path.join(self.folder, f"{uid}.lock"),
                os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                pwd.getpwuid(uid)
                taken = True
            except KeyError:
                taken = bool(processes_of(uid))
            if taken:  # a real account, or processes left by someone else: not ours to kill
                os.close(fd)
                continue
            return uid, fd
        raise RuntimeError(f"no free uid in {self.first}..{self.first + self.count - 1}")

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)


def processes_of(uid: int) -> list[int]:
    """Live processes of ``uid`` (zombies, already dead and waiting to be reaped, are left out)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        state = f.read().rsplit(b")", 1)[1].split()[0]
                    if state not in (b"Z", b"X"):
                        found.append(int(entry))
            except (OSError, IndexError):
                pass
    return found


def read_input(path: str, limit: int) -> bytes:
    """An input file's bytes: a regular file only, never through a link, never blocking (a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as error:
        if os.path.islink(path):
            raise SubmissionError("a symbolic link, not a file: not followed") from None
        raise SubmissionError(f"cannot open the file: {os.strerror(error.errno)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError("not a regular file (a pipe, socket or device): not read")
        if info.st_size > limit:
            raise SubmissionError(
                f"file is {info.st_size >> 20} MiB; notebooks over {limit >> 20} MiB are refused"
            )
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise SubmissionError(f"file is over {limit >> 20} MiB: refused")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _kernel_env(scratch: str, model_cache: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": scratch,
        "TMPDIR": os.path.join(scratch, "tmp"),
        "PYTHONPATH": str(ROOT),
        "RSL_CACHE_DIR": model_cache,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": os.path.join(scratch, "hf"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": os.path.join(scratch, "mpl"),
        "IPYTHONDIR": os.path.join(scratch, "ipython"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "LANG": "C.UTF-8",
        "JUPYTER_PLATFORM_DIRS": "1",
    }
    return env


def grade_one(index: int, path: str, name: str) -> SubmissionResult:
    lesson: Lesson = _WORKER["lesson"]
    settings: Settings = _WORKER["settings"]
    start = time.monotonic()
    result = SubmissionResult(name, max_points=lesson.max_points)
    for cell in lesson.grade_cells:
        result.cells[cell.grade_id] = asdict(
            CellGrade(0.0, cell.points, False, "not graded", cell.exercise, cell.kind)
        )
    try:
        from .lesson import MAX_SUBMISSION_BYTES

        data = read_input(path, MAX_SUBMISSION_BYTES)
        result.sha256 = hashlib.sha256(data).hexdigest()
        nb = read_submission(data, lesson)
        _run_and_judge(index, nb, lesson, settings, result)
    except SubmissionError as error:
        result.error = str(error)
        for cell in result.cells.values():
            cell["message"] = f"not graded: {error}"
    except Exception as error:  # a grader bug must still leave a row, and the batch goes on
        result.error = f"grader error: {type(error).__name__}: {error}"[:1000]
    result.total = sum(c["points"] for c in result.cells.values())
    result.seconds = round(time.monotonic() - start, 2)
    return result


def _run_and_judge(index, nb, lesson, settings, result) -> None:
    from .judge import Budget
    from .kernel import KernelSession, MemoryCgroup

    judge = _WORKER["judge"]
    seed = _WORKER["seed"]
    plan, notes = kernel_plan(nb, lesson)
    result.notes.extend(notes)
    isolate = settings.isolate and can_isolate()
    uid, uid_lock = _WORKER["uids"].acquire() if isolate else (None, None)
    memory_bytes = int(settings.memory_gb * (1 << 30))
    cgroup = (
        MemoryCgroup.create(
            f"rsl-grading-{os.getpid()}-{index}-{secrets.token_hex(4)}", memory_bytes
        )
        if isolate
        else None
    )
    result.isolation = isolation_level(isolate, cgroup)
    scratch = tempfile.mkdtemp(prefix=f"sub{index}-", dir=_WORKER["temp_root"])
    records, records_fd = make_scratch(scratch, uid)
    config = {
        "memory_bytes": memory_bytes,
        "file_bytes": settings.file_mb << 20,
        "processes": 512,
        "uid": uid,
        "network": False,
        "allow": allowed_paths(_WORKER["model_cache"]),
        "cgroup_object": cgroup,
    }
    session = KernelSession(scratch, _kernel_env(scratch, _WORKER["model_cache"]), config)
    status: dict[str, str] = {}
    stopped = ""
    try:
        try:
            session.start(settings.start_timeout)
        except Exception as error:
            stopped = f"kernel did not start: {error}"
        if not stopped:
            boot = session.run(
                f"import course_utils.grading.capture as _rsl_capture\n"
                f"__rsl_grading__ = _rsl_capture.Recorder({records!r})\n"
                f"import course_utils.checks as _rsl_checks\n"
                f"_rsl_checks.set_grading_seed({seed!r})\ndel _rsl_capture, _rsl_checks",
                settings.start_timeout,
            )
            if boot.status != "ok":
                stopped = f"grading bootstrap failed: {boot.error}"
        deadline = time.monotonic() + settings.submission_timeout
        for cell in plan:
            if stopped:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = (
                    f"the submission's time budget ({settings.submission_timeout:.0f} s) ran out"
                )
                session.kill()
                break
            if cell.kind == "begin":
                names = lesson.cell(cell.grade_id).learner_names
                source = f"__rsl_grading__.begin({cell.grade_id!r}, {names!r}, globals())"
            elif cell.kind == "end":
                source = "__rsl_grading__.end()"
            else:
                source = cell.source
            graded = cell.kind == "check" or cell.grade_id in lesson.exercise_ids
            limit = settings.cell_timeout if graded else settings.other_cell_timeout
            run = session.run(source, min(limit, remaining))
            where = (
                f"cell {cell.student_index} of the notebook"
                if cell.kind == "student"
                else f"graded cell {cell.grade_id}"
            )
            if cell.kind == "check":
                status[cell.grade_id] = run.status
            if run.status == "timeout" and cell.kind == "student":
                result.notes.append(f"{where} timed out and was interrupted")
            if run.status == "dead":
                stopped = f"{where}: {run.error}"
                if cell.kind == "check":
                    status[cell.grade_id] = "dead"
    finally:
        try:
            session.shutdown()
        finally:
            if cgroup is not None:
                cgroup.remove()
            if uid_lock is not None:
                _WORKER["uids"].release(uid_lock)  # the uid has no process left: free for others
        result.output_chars = session.output_chars
    try:
        not_run = []
        budget = Budget()  # replay costs, shared by the cells of this submission
        for grade in lesson.grade_cells:
            cell_status = status.get(grade.grade_id)
            entry = result.cells[grade.grade_id]
            if cell_status is None or cell_status == "dead":
                not_run.append(grade.grade_id)
                entry["message"] = f"not run: {stopped}" if stopped else "not run"
                continue
            verdict = judge.grade(grade, records_fd, budget, seed=seed)
            entry["passed"] = verdict.passed
            entry["points"] = grade.points if verdict.passed else 0.0
            entry["message"] = verdict.message
            if cell_status == "timeout":
                entry["passed"], entry["points"] = False, 0.0
                entry["message"] = (
                    f"timed out after {settings.cell_timeout:.0f} s; {verdict.message}"
                )
        if stopped:
            result.error = f"{stopped}; zero for {', '.join(not_run)}" if not_run else stopped
    finally:
        os.close(records_fd)
        shutil.rmtree(scratch, ignore_errors=True)


def make_scratch(scratch: str, uid: int | None) -> tuple[str, int]:
    """Prepare a kernel's scratch folder (its home) for ``uid``; return the record folder and a
    descriptor of it, opened before the kernel exists, so the kernel cannot redirect the grader."""
    from .judge import open_record_folder

    records = os.path.join(scratch, "records")
    for sub in (records, os.path.join(scratch, "tmp")):
        os.makedirs(sub)
    records_fd = open_record_folder(records)
    if uid is not None:
        for folder in (scratch, os.path.join(scratch, "tmp")):
            os.chown(folder, uid, uid)
        # the record folder stays root's: the kernel may add files (sticky, not listable), and a
        # file of root's inside keeps it from being emptied and removed
        with open(os.path.join(records, ".keep"), "w"):
            pass
        os.chmod(records, 0o1733)
    os.chmod(scratch, 0o700)
    return records, records_fd


def isolation_level(isolate: bool, cgroup) -> str:
    if not isolate:
        return "limits only (not root: same user as the grader)"
    memory = (
        f"{cgroup.level} memory cap on the process tree"
        if cgroup is not None
        else "per-process memory cap only (no cgroup could be made)"
    )
    return f"allow-list root + namespaces + own uid + {memory}"


def allowed_paths(model_cache: str) -> list[str]:
    """What an isolated kernel may read besides the system and Python: the course package alone (not
    the checkout holding it) and the model cache."""
    return [str(ROOT / "course_utils"), model_cache]


# ---------------------------------------------------------------- batch side


def readable_model_cache(temp_root_parent: str, isolate: bool) -> str:
    """A model cache folder the kernel can read: the user's own, or (isolated) a world-readable
    copy."""
    from ..model import cache_dir, embedded_model_files

    if not isolate:
        return str(cache_dir())
    target_root = Path(temp_root_parent) / "rsl-grading-model-cache"
    target_root.mkdir(mode=0o755, exist_ok=True)
    os.chmod(target_root, 0o755)
    folder = embedded_model_files()
    target = target_root / folder.name
    manifest = folder / "manifest.json"
    if not (
        (target / "manifest.json").is_file()
        and (target / "manifest.json").read_bytes() == manifest.read_bytes()
    ):
        tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=target_root))
        for item in folder.iterdir():
            shutil.copyfile(item, tmp / item.name)
            os.chmod(tmp / item.name, 0o644)
        os.chmod(tmp, 0o755)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return str(target_root)


def list_submissions(folder: Path) -> list[Path]:
    """Every entry below ``folder`` that is not a folder (links, pipes and sockets included: each
    gets a row saying why it was not graded); links to folders are not followed."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=False):
        found.extend(Path(parent) / name for name in files)
        found.extend(
            Path(parent) / name for name in dirs if os.path.islink(os.path.join(parent, name))
        )
    return sorted(found)


def display_name(path: Path, folder: Path) -> str:
    """The file's name relative to the submissions folder, as text: bytes that are not UTF-8 (names
    from LMS or Windows archives) are shown as ``\\xNN`` escapes instead of breaking the results."""
    raw = os.fsencode(str(path.relative_to(folder)))
    return raw.decode("utf-8", errors="backslashreplace")


def trusted_files(lesson: Lesson) -> list[Path]:
    """The files whose content decides a grade: the lesson's solution, the grader, the check
    framework, the lesson's check modules and the course modules its solution imports."""
    package = ROOT / "course_utils"
    files = {
        lesson.path,
        *(package / "grading").glob("*.py"),
        package / "checks" / "__init__.py",
        *(package / "authoring").glob("*.py"),
        *(package / "from_solutions").glob("*.py"),
        package / "exercises.py",
        package / "paths.py",
        package / "model.py",
    }
    sources = "\n".join(c.source for c in lesson.notebook.cells if c.cell_type == "code")
    for module in re.findall(r"course_utils\.checks\s+import\s+(\w+)", sources):
        files.add(package / "checks" / f"{module}.py")
    for module in re.findall(r"course_utils\.(\w+)", sources):
        files.add(package / f"{module}.py")
    return sorted(p for p in files if p.is_file())


def trusted_fingerprint(lesson: Lesson) -> str:
    """Hash of the files the grader trusts for ``lesson``; compared before and after a batch."""
    digest = hashlib.sha256()
    for path in trusted_files(lesson):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def grade_folder(
    lesson_name: str, submissions: Path, out: Path, settings: Settings | None = None, progress=None
) -> list[SubmissionResult]:
    settings = settings or Settings()
    lesson = load_lesson(lesson_name)
    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    files = list_submissions(submissions)
    names = [display_name(p, submissions) for p in files]
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = trusted_fingerprint(lesson)
    isolate = settings.isolate and can_isolate()
    temp_parent = tempfile.gettempdir()
    model_cache = readable_model_cache(temp_parent, isolate)
    temp_root = tempfile.mkdtemp(prefix="rsl-grading-", dir=temp_parent)
    os.chmod(temp_root, 0o711)  # kernels may enter their own folder, not list the others
    seed = secrets.randbits(
        62
    )  # hidden tests' inputs: drawn now, never seen by a student in advance
    workers = settings.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(files) or 1))
    results: dict[int, SubmissionResult] = {}
    pending = list(range(len(files)))
    started = time.monotonic()
    writer = ResultWriter(lesson, out)
    try:
        for attempt in range(
            2
        ):  # a crashed worker breaks the pool: its submissions get one more try
            if not pending:
                break
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(
                workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(str(lesson.path), settings, temp_root, model_cache, seed),
            ) as pool:
                futures = {pool.submit(grade_one, i, str(files[i]), names[i]): i for i in pending}
                for future in concurrent.futures.as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except Exception as error:  # BrokenProcessPool and friends
                        if attempt == 1:
                            results[i] = SubmissionResult(
                                names[i],
                                max_points=lesson.max_points,
                                error=f"grader worker crashed: {type(error).__name__}: {error}",
                            )
                        else:
                            continue
                    writer.add(results[i])
                    if progress:
                        progress(results[i])
            pending = [i for i in range(len(files)) if i not in results]
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)
        for i in range(len(files)):  # whatever happened, every input file has a row
            if i not in results:
                results[i] = SubmissionResult(
                    names[i],
                    max_points=lesson.max_points,
                    error="not graded: the batch stopped before this file",
                )
                writer.add(results[i])
        writer.close()
    ordered = [results[i] for i in range(len(files))]
    tampered = trusted_fingerprint(lesson) != fingerprint
    write_results(
        lesson, ordered, out, settings, time.monotonic() - started, tampered, isolate, seed
    )
    return ordered


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """A text cell a spreadsheet shows as text: a leading ``= + - @`` tab or CR starts a formula, so
    such a cell gets a leading apostrophe (the usual CSV-injection escape)."""
    value = str(value)
    return "'" + value if value.startswith(_FORMULA_START) else value


def _columns(lesson: Lesson) -> list[str]:
    return [
        "submission",
        *(c.grade_id for c in lesson.grade_cells),
        "total",
        "max_points",
        "error",
    ]


def _row(lesson: Lesson, r: SubmissionResult) -> list[str]:
    return [
        csv_text(r.submission),
        *(_number(r.cells.get(c.grade_id, {}).get("points", 0.0)) for c in lesson.grade_cells),
        _number(r.total),
        _number(r.max_points),
        csv_text(r.error),
    ]


class ResultWriter:
    """Writes each row the moment it is graded (CSV + one JSON line), flushed to disk, so a crash of
    the batch loses nothing already graded. ``close`` leaves both files; ``write_results`` then
    replaces the CSV by the same rows in file order and writes the full JSON."""

    def __init__(self, lesson: Lesson, out: Path):
        self.lesson = lesson
        self.csv_file = open(
            out / f"{lesson.name}.csv", "w", newline="", encoding="utf-8", errors="backslashreplace"
        )
        self.csv = csv.writer(self.csv_file)
        self.csv.writerow(_columns(lesson))
        self.jsonl = open(
            out / f"{lesson.name}.partial.jsonl", "w", encoding="utf-8", errors="backslashreplace"
        )
        self._flush()

    def _flush(self) -> None:
        for f in (self.csv_file, self.jsonl):
            f.flush()
            os.fsync(f.fileno())

    def add(self, result: SubmissionResult) -> None:
        self.csv.writerow(_row(self.lesson, result))
        self.jsonl.write(json.dumps(asdict(result), ensure_ascii=True) + "\n")
        self._flush()

    def close(self) -> None:
        self.csv_file.close()
        self.jsonl.close()


def write_results(
    lesson: Lesson,
    results: list[SubmissionResult],
    out: Path,
    settings: Settings,
    seconds: float,
    tampered: bool,
    isolate: bool,
    seed: int | None = None,
) -> None:
    tmp = out / f".{lesson.name}.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
        writer = csv.writer(f)
        writer.writerow(_columns(lesson))
        for r in results:
            writer.writerow(_row(lesson, r))
    os.replace(tmp, out / f"{lesson.name}.csv")
    report = {
        "lesson": lesson.name,
        "columns": {
            c.grade_id: {"exercise": c.exercise, "kind": c.kind, "points": c.points}
            for c in lesson.grade_cells
        },
        "settings": asdict(settings),
        "isolation": "; ".join(sorted({r.isolation for r in results if r.isolation}))
        or isolation_level(isolate, None),
        "hidden_test_seed": seed,
        "trusted_files_changed_during_batch": tampered,
        "seconds": round(seconds, 2),
        "submissions": [asdict(r) for r in results],
    }
    tmp = out / f".{lesson.name}.json.tmp"
    with open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
        f.write(json.dumps(report, indent=1, ensure_ascii=False))
    os.replace(tmp, out / f"{lesson.name}.json")
    partial = out / f"{lesson.name}.partial.jsonl"
    if partial.exists():
        partial.unlink()


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m course_utils.grade", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("lesson", help="lesson: 00, 00_first_look or a solution notebook path")
    parser.add_argument(
        "submissions", type=Path, help="folder of submitted notebooks (searched recursively)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results"), help="folder for LESSON.csv and LESSON.json"
    )
    defaults = Settings()
    parser.add_argument(
        "--timeout",
        type=float,
        default=defaults.cell_timeout,
        help="seconds per exercise cell and per check cell",
    )
    parser.add_argument(
        "--other-cell-timeout",
        type=float,
        default=defaults.other_cell_timeout,
        help="seconds per other cell (setup, model loading)",
    )
    parser.add_argument("--submission-timeout", type=float, default=defaults.submission_timeout)
    parser.add_argument(
        "--memory-gb", type=float, default=defaults.memory_gb, help="kernel address-space cap"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="parallel submissions (default: CPU cores)"
    )
    parser.add_argument(
        "--no-isolation", action="store_true", help="skip namespaces and the uid switch"
    )
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    settings = Settings(
        cell_timeout=args.timeout,
        other_cell_timeout=args.other_cell_timeout,
        submission_timeout=args.submission_timeout,
        memory_gb=args.memory_gb,
        workers=args.workers,
        isolate=not args.no_isolation,
    )

    def progress(r: SubmissionResult) -> None:
        print(
            f"{r.submission}: {_number(r.total)}/{_number(r.max_points)}"
            + (f"  [{r.error}]" if r.error else "")
            + f"  ({r.seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    start = time.monotonic()
    results = grade_folder(args.lesson, args.submissions, args.out, settings, progress)
    name = load_lesson(args.lesson).name
    print(
        f"graded {len(results)} submissions in {time.monotonic() - start:.1f} s -> "
        f"{args.out / (name + '.csv')}, {args.out / (name + '.json')}"
    )
    return 0
