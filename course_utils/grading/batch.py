"""Grade a folder of submissions in parallel and write the CSV and JSON results.

Each worker process builds one ``Judge`` (it runs the solution notebook once), then for each
submission: reads and validates the file, starts a fresh sandboxed kernel, runs the student's cells
with the trusted graded cells restored around them, kills the kernel, and judges every graded cell
in its own process from the kernel's records. A submission never stops the batch: anything that
goes wrong becomes a row with zeros and a reason in the error column.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..exercises import ROOT, SOLUTIONS
from .lesson import Lesson, SubmissionError, kernel_plan, load_lesson, read_submission
from .sandbox import can_isolate

FIRST_UID = 61000


@dataclass
class Settings:
    cell_timeout: float = 60.0         # seconds per exercise cell and per graded (check) cell
    other_cell_timeout: float = 300.0  # seconds per other cell (loading the model...)
    submission_timeout: float = 900.0  # seconds for everything one submission runs
    start_timeout: float = 90.0        # seconds for the kernel to start
    memory_gb: float = 6.0             # address-space cap of the kernel process (RLIMIT_AS)
    file_mb: int = 512                 # largest file the kernel may write (RLIMIT_FSIZE)
    workers: int = 0                   # 0: one per CPU core
    isolate: bool = True               # namespaces + own uid when running as root on Linux


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


def _init_worker(lesson_path: str, settings: Settings, temp_root: str, model_cache: str) -> None:
    import torch

    torch.set_num_threads(1)
    from .judge import Judge

    lesson = load_lesson(lesson_path)
    _WORKER.update(lesson=lesson, judge=Judge(lesson), settings=settings, temp_root=temp_root,
                   model_cache=model_cache)


def _kernel_env(scratch: str, model_cache: str) -> dict:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch, "TMPDIR": os.path.join(scratch, "tmp"),
        "PYTHONPATH": str(ROOT), "RSL_CACHE_DIR": model_cache, "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "HF_HOME": os.path.join(scratch, "hf"),
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg", "MPLCONFIGDIR": os.path.join(scratch, "mpl"),
        "IPYTHONDIR": os.path.join(scratch, "ipython"), "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0", "LANG": "C.UTF-8", "JUPYTER_PLATFORM_DIRS": "1",
    }
    return env


def grade_one(index: int, path: str, display_name: str, hidden: list[str]) -> SubmissionResult:
    lesson: Lesson = _WORKER["lesson"]
    settings: Settings = _WORKER["settings"]
    start = time.monotonic()
    result = SubmissionResult(display_name, max_points=lesson.max_points)
    for cell in lesson.grade_cells:
        result.cells[cell.grade_id] = asdict(CellGrade(0.0, cell.points, False, "not graded", cell.exercise, cell.kind))
    try:
        if os.path.islink(path):
            raise SubmissionError("a symbolic link, not a file: not followed")
        with open(path, "rb") as f:
            data = f.read()
        result.sha256 = hashlib.sha256(data).hexdigest()
        nb = read_submission(data, lesson)
        _run_and_judge(index, nb, lesson, settings, hidden, result)
    except SubmissionError as error:
        result.error = str(error)
        for cell in result.cells.values():
            cell["message"] = f"not graded: {error}"
    except Exception as error:  # a grader bug must still leave a row, and the batch goes on
        result.error = f"grader error: {type(error).__name__}: {error}"[:1000]
    result.total = sum(c["points"] for c in result.cells.values())
    result.seconds = round(time.monotonic() - start, 2)
    return result


def _run_and_judge(index, nb, lesson, settings, hidden, result) -> None:
    from .judge import Verdict
    from .kernel import KernelSession

    judge = _WORKER["judge"]
    plan, notes = kernel_plan(nb, lesson)
    result.notes.extend(notes)
    isolate = settings.isolate and can_isolate()
    uid = FIRST_UID + index if isolate else None
    result.isolation = "namespaces+uid" if isolate else "limits only (not root: same user as the grader)"
    scratch = tempfile.mkdtemp(prefix=f"sub{index}-", dir=_WORKER["temp_root"])
    records = os.path.join(scratch, "records")
    for sub in (records, os.path.join(scratch, "tmp")):
        os.makedirs(sub)
    if uid is not None:
        for folder in (scratch, records, os.path.join(scratch, "tmp")):
            os.chown(folder, uid, uid)
    os.chmod(scratch, 0o700)
    config = {"memory_bytes": int(settings.memory_gb * (1 << 30)), "file_bytes": settings.file_mb << 20,
              "processes": 512, "uid": uid, "hide": hidden, "network": False, "expose": [str(ROOT)]}
    session = KernelSession(scratch, _kernel_env(scratch, _WORKER["model_cache"]), config)
    status: dict[str, str] = {}
    errors: dict[str, str] = {}
    stopped = ""
    try:
        try:
            session.start(settings.start_timeout)
        except Exception as error:
            stopped = f"kernel did not start: {error}"
        if not stopped:
            boot = session.run(f"import course_utils.grading.capture as _rsl_capture\n"
                               f"__rsl_grading__ = _rsl_capture.Recorder({records!r})\ndel _rsl_capture",
                               settings.start_timeout)
            if boot.status != "ok":
                stopped = f"grading bootstrap failed: {boot.error}"
        deadline = time.monotonic() + settings.submission_timeout
        for cell in plan:
            if stopped:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = f"the submission's time budget ({settings.submission_timeout:.0f} s) ran out"
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
            where = (f"cell {cell.student_index} of the notebook" if cell.kind == "student"
                     else f"graded cell {cell.grade_id}")
            if cell.kind == "check":
                status[cell.grade_id] = run.status
                errors[cell.grade_id] = run.error
            if run.status == "timeout" and cell.kind == "student":
                result.notes.append(f"{where} timed out and was interrupted")
            if run.status == "dead":
                stopped = f"{where}: {run.error}"
                if cell.kind == "check":
                    status[cell.grade_id] = "dead"
    finally:
        session.shutdown()
        result.output_chars = session.output_chars
    try:
        not_run = []
        for grade in lesson.grade_cells:
            cell_status = status.get(grade.grade_id)
            entry = result.cells[grade.grade_id]
            if cell_status is None or cell_status == "dead":
                not_run.append(grade.grade_id)
                entry["message"] = f"not run: {stopped}" if stopped else "not run"
                continue
            if judge.replayable[grade.grade_id]:
                verdict = judge.grade(grade, records)
                entry["trust"] = "grader"
            else:  # see Judge._test_replay_on_the_solution: decided per lesson, never per submission
                verdict = Verdict(cell_status == "ok", "passed in the kernel" if cell_status == "ok"
                                  else f"failed in the kernel: {errors.get(grade.grade_id, '')}")
                entry["trust"] = "kernel"
            entry["passed"] = verdict.passed
            entry["points"] = grade.points if verdict.passed else 0.0
            entry["message"] = verdict.message
            if cell_status == "timeout":
                entry["passed"], entry["points"] = False, 0.0
                entry["message"] = f"timed out after {settings.cell_timeout:.0f} s; {verdict.message}"
        if stopped:
            result.error = f"{stopped}; zero for {', '.join(not_run)}" if not_run else stopped
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------- batch side

def readable_model_cache(temp_root_parent: str, isolate: bool) -> str:
    """A model cache folder the kernel can read: the user's own, or (isolated) a world-readable copy."""
    from ..model import cache_dir, embedded_model_files

    if not isolate:
        return str(cache_dir())
    target_root = Path(temp_root_parent) / "rsl-grading-model-cache"
    target_root.mkdir(mode=0o755, exist_ok=True)
    os.chmod(target_root, 0o755)
    folder = embedded_model_files()
    target = target_root / folder.name
    manifest = folder / "manifest.json"
    if not ((target / "manifest.json").is_file() and (target / "manifest.json").read_bytes() == manifest.read_bytes()):
        tmp = Path(tempfile.mkdtemp(prefix=".copy-", dir=target_root))
        for item in folder.iterdir():
            shutil.copyfile(item, tmp / item.name)
            os.chmod(tmp / item.name, 0o644)
        os.chmod(tmp, 0o755)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return str(target_root)


def list_submissions(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def trusted_files(lesson: Lesson) -> list[Path]:
    """The files whose content decides a grade: the lesson's solution, the grader, the check framework,
    the lesson's check modules and the course modules its solution imports."""
    package = ROOT / "course_utils"
    files = {lesson.path, *(package / "grading").glob("*.py"), package / "checks" / "__init__.py",
             package / "exercises.py", package / "model.py"}
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


def grade_folder(lesson_name: str, submissions: Path, out: Path, settings: Settings | None = None,
                 progress=None) -> list[SubmissionResult]:
    settings = settings or Settings()
    lesson = load_lesson(lesson_name)
    submissions, out = Path(submissions).resolve(), Path(out).resolve()
    files = list_submissions(submissions)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = trusted_fingerprint(lesson)
    isolate = settings.isolate and can_isolate()
    temp_parent = tempfile.gettempdir()
    model_cache = readable_model_cache(temp_parent, isolate)
    temp_root = tempfile.mkdtemp(prefix="rsl-grading-", dir=temp_parent)
    os.chmod(temp_root, 0o711)  # kernels may enter their own folder, not list the others
    hidden = [str(p) for p in (SOLUTIONS, ROOT / "tests", ROOT / ".git", submissions, out) if p.exists()]
    workers = settings.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(files) or 1))
    results: dict[int, SubmissionResult] = {}
    pending = list(range(len(files)))
    started = time.monotonic()
    try:
        for attempt in range(2):  # a crashed worker breaks the pool: its submissions get one more try
            if not pending:
                break
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(
                    workers, mp_context=context, initializer=_init_worker,
                    initargs=(str(lesson.path), settings, temp_root, model_cache)) as pool:
                futures = {pool.submit(grade_one, i, str(files[i]), str(files[i].relative_to(submissions)), hidden): i
                           for i in pending}
                for future in concurrent.futures.as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except Exception as error:  # BrokenProcessPool and friends
                        if attempt == 1:
                            results[i] = SubmissionResult(str(files[i].relative_to(submissions)),
                                                          max_points=lesson.max_points,
                                                          error=f"grader worker crashed: {type(error).__name__}: {error}")
                        continue
                    if progress:
                        progress(results[i])
            pending = [i for i in range(len(files)) if i not in results]
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)
    ordered = [results[i] for i in range(len(files))]
    tampered = trusted_fingerprint(lesson) != fingerprint
    write_results(lesson, ordered, out, settings, time.monotonic() - started, tampered, isolate)
    return ordered


def write_results(lesson: Lesson, results: list[SubmissionResult], out: Path, settings: Settings,
                  seconds: float, tampered: bool, isolate: bool) -> None:
    columns = [c.grade_id for c in lesson.grade_cells]
    with open(out / f"{lesson.name}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["submission", *columns, "total", "max_points", "error"])
        for r in results:
            row = [r.submission, *(_number(r.cells.get(c, {}).get("points", 0.0)) for c in columns),
                   _number(r.total), _number(r.max_points), r.error]
            writer.writerow(row)
    report = {
        "lesson": lesson.name,
        "columns": {c.grade_id: {"exercise": c.exercise, "kind": c.kind, "points": c.points} for c in lesson.grade_cells},
        "settings": asdict(settings),
        "isolation": "namespaces+uid" if isolate else "limits only",
        "trusted_files_changed_during_batch": tampered,
        "seconds": round(seconds, 2),
        "submissions": [asdict(r) for r in results],
    }
    (out / f"{lesson.name}.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m course_utils.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("lesson", help="lesson: 00, 00_first_look or a solution notebook path")
    parser.add_argument("submissions", type=Path, help="folder of submitted notebooks (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for LESSON.csv and LESSON.json")
    defaults = Settings()
    parser.add_argument("--timeout", type=float, default=defaults.cell_timeout,
                        help="seconds per exercise cell and per check cell")
    parser.add_argument("--other-cell-timeout", type=float, default=defaults.other_cell_timeout,
                        help="seconds per other cell (setup, model loading)")
    parser.add_argument("--submission-timeout", type=float, default=defaults.submission_timeout)
    parser.add_argument("--memory-gb", type=float, default=defaults.memory_gb, help="kernel address-space cap")
    parser.add_argument("--workers", type=int, default=0, help="parallel submissions (default: CPU cores)")
    parser.add_argument("--no-isolation", action="store_true", help="skip namespaces and the uid switch")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"{args.submissions} is not a folder")
    settings = Settings(cell_timeout=args.timeout, other_cell_timeout=args.other_cell_timeout,
                        submission_timeout=args.submission_timeout,
                        memory_gb=args.memory_gb, workers=args.workers, isolate=not args.no_isolation)

    def progress(r: SubmissionResult) -> None:
        print(f"{r.submission}: {_number(r.total)}/{_number(r.max_points)}"
              + (f"  [{r.error}]" if r.error else "") + f"  ({r.seconds:.1f} s)", file=sys.stderr, flush=True)

    start = time.monotonic()
    results = grade_folder(args.lesson, args.submissions, args.out, settings, progress)
    name = load_lesson(args.lesson).name
    print(f"graded {len(results)} submissions in {time.monotonic() - start:.1f} s -> "
          f"{args.out / (name + '.csv')}, {args.out / (name + '.json')}")
    return 0
