"""Tests of the grader (course_utils.grading): hostile and honest submissions, inputs untouched,
record decoding, and interoperability with a real nbgrader 0.9.6 in its own virtual environment."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from course_utils.exercises import NOTEBOOKS, ROOT, SOLUTIONS
from course_utils.grading import codec
from course_utils.grading.batch import Settings, grade_folder, trusted_fingerprint
from course_utils.grading.judge import same_input
from course_utils.grading.lesson import SubmissionError, kernel_plan, load_lesson, read_submission
from course_utils.grading.sandbox import can_isolate

sys.path.insert(0, str(Path(__file__).parent / "grading_fixtures"))
import lesson00  # noqa: E402  (fixture builder, lives next to this file)

LESSON = "00_first_look"


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ fast: no kernel


@pytest.fixture(scope="module")
def lesson():
    return load_lesson(LESSON)


def test_lesson_lists_graded_cells_and_learner_names(lesson):
    assert [c.grade_id for c in lesson.grade_cells] == ["check00_next_token_probs", "check00_top_k"]
    assert lesson.cell("check00_next_token_probs").learner_names == ["next_token_probs"]
    assert lesson.cell("check00_top_k").learner_names == [
        "top_k"
    ]  # `model`, `checks` come from the grader
    assert all("### BEGIN HIDDEN TESTS" in c.source for c in lesson.grade_cells)
    assert lesson.max_points == 2


@pytest.mark.parametrize("name", sorted(lesson00.invalid_files()))
def test_invalid_files_get_a_clear_error(lesson, name):
    data, expected = lesson00.invalid_files()[name]
    with pytest.raises(SubmissionError, match=expected):
        read_submission(data, lesson)


def test_plan_restores_trusted_check_cells_and_adds_missing_ones(lesson):
    nb = lesson00.kernel_submissions(False)["fake_pass.ipynb"][0]
    nb.cells = [
        c
        for c in nb.cells
        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") != "check00_top_k"
    ]
    plan, notes = kernel_plan(read_submission(nbformat.writes(nb).encode(), lesson), lesson)
    checks = [c for c in plan if c.kind == "check"]
    assert [c.grade_id for c in checks] == ["check00_next_token_probs", "check00_top_k"]
    assert all(c.source == lesson.cell(c.grade_id).source for c in checks)  # hidden tests included
    assert not any(
        c.source.startswith('print("✅ 00.') for c in plan
    )  # the student's fake check cells
    kinds = [c.kind for c in plan]
    assert kinds[-3:] == ["begin", "check", "end"]
    assert notes == [
        "check cell check00_next_token_probs had been edited: the original check ran in its place",
        "check cell check00_top_k was deleted: the trusted check ran at the end",
    ]


def test_student_notebook_ships_no_hidden_tests_or_solutions():
    for path in NOTEBOOKS.glob("*.ipynb"):
        text = path.read_text()
        assert "BEGIN HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text, path
        assert "hidden=True" not in text, path


def test_codec_rebuilds_plain_objects_only():
    import torch

    class Liar(list):
        def __eq__(self, other):
            return True

    encoder = codec.Encoder()
    data = encoder.encode(
        [
            Liar([1, 2]),
            torch.arange(4.0).as_subclass(type("T", (torch.Tensor,), {})),
            ("a", 1.5, None),
            {"k": float("nan")},
            object(),
        ]
    )
    decoded = codec.Decoder(bytes(encoder.blob)).decode(json.loads(json.dumps(data)))
    liar, tensor, triple, mapping, opaque = decoded
    assert (
        isinstance(liar, codec.Opaque) and "Liar" in liar.type_name
    )  # a subclass is never rebuilt
    assert type(tensor) is torch.Tensor and tensor.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert triple == ("a", 1.5, None) and type(triple) is tuple
    assert mapping["k"] != mapping["k"]  # nan survives
    assert isinstance(opaque, codec.Opaque) and opaque != opaque.type_name


@pytest.mark.parametrize(
    "bad",
    [
        {"__tensor__": {"dtype": "object", "shape": [1], "offset": 0, "nbytes": 8}},
        {"__tensor__": {"dtype": "float32", "shape": [10**6], "offset": 0, "nbytes": 4}},
        {"__tensor__": {"dtype": "float32", "shape": [2], "offset": 4, "nbytes": 8}},
        {"__pickle__": "gASV"},
        {"__list__": "not a list"},
    ],
)
def test_decoder_refuses_malformed_records(bad):
    with pytest.raises(codec.DecodeError):
        codec.Decoder(b"\0" * 8).decode(bad)


def test_inputs_are_matched_by_value_not_by_claim():
    import torch

    assert same_input(["The capital of Japan is", 5], ["The capital of Japan is", 5])
    assert not same_input(["The capital of Japan is", 5], ["The capital of Japan is", 1])
    assert not same_input([torch.ones(3)], [torch.zeros(3)])
    assert same_input([torch.ones(3)], [torch.ones(3) + 1e-7])
    assert not same_input([torch.ones(3)], [codec.Opaque("torch.Tensor")])


def test_replay_repeats_callbacks_and_in_place_edits(tmp_path):
    """Factories returning hooks, hooks editing in place, functions calling a spy: the records made
    by the kernel-side recorder let the grader's replay behave like the learner's code."""
    import torch

    from course_utils.grading.capture import Recorder
    from course_utils.grading.judge import ReplayMismatch, _ReplayState, read_record

    def apply_all(func, pairs):
        return sum(func(x, y) for x, y in pairs)

    def make_zeroer(position):
        def hook(activation, hook=None):
            activation[:, position] = 0  # in place, returns None

        return hook

    namespace = {"apply_all": apply_all, "make_zeroer": make_zeroer, "answer": [1, "two", 3.0]}
    recorder = Recorder(str(tmp_path))
    recorder.begin("cell", ["apply_all", "make_zeroer", "answer", "missing"], namespace)
    namespace["apply_all"](lambda x, y: x * y, [(1, 2), (3, 4)])
    namespace["make_zeroer"](1)(torch.ones(1, 3, 2))
    recorder.end()
    assert namespace["apply_all"] is apply_all  # names restored after the check

    record, blob = read_record(str(tmp_path), "cell")
    state = _ReplayState(record, blob)
    names = record["names"]
    assert names["missing"] == {"missing": True}
    assert state.decoder.decode(names["answer"]["value"]) == [1, "two", 3.0]
    seen = []

    def spy(x, y):
        seen.append((x, y))
        return x * y

    assert state.decoder.decode(names["apply_all"]["value"])(spy, [(1, 2), (3, 4)]) == 14
    assert seen == [(1, 2), (3, 4)]  # the grader's own spy saw the learner's calls
    make = state.decoder.decode(names["make_zeroer"]["value"])
    hook = make(1)
    activation = torch.ones(1, 3, 2)
    assert hook(activation) is None
    assert activation[0, 1].tolist() == [0, 0] and activation[0, 0].tolist() == [1, 1]
    with pytest.raises(ReplayMismatch, match="no recorded output"):
        make(2)  # the learner's factory was never called again
    other = _ReplayState(record, blob).decoder.decode(names["make_zeroer"]["value"])
    with pytest.raises(ReplayMismatch, match="different inputs"):
        other(2)  # a different input than the one recorded


# ------------------------------------------------------------------ slow: real kernels


def _csv_name(name: str) -> str:
    """How a file name appears in the CSV: non-UTF-8 bytes escaped, formulas neutralised."""
    shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "'" + shown if shown.startswith(("=", "+", "-", "@", "\t", "\r")) else shown


@pytest.mark.slow
def test_hostile_and_honest_batch(tmp_path, capfd):
    isolated = can_isolate()
    submissions = tmp_path / "submissions"
    expected = lesson00.write_submissions(submissions, include_destructive=isolated)
    if not isolated:  # without root there is no private mount namespace: the keys are readable
        (submissions / "read_answer_keys.ipynb").unlink()
        expected.pop("read_answer_keys.ipynb")
    # inputs that are not regular files still get a row, and are never followed or blocked on
    os.mkfifo(submissions / "pipe.ipynb")
    (submissions / "link.ipynb").symlink_to(submissions / "honest_correct.ipynb")
    zero = {"check00_next_token_probs": 0, "check00_top_k": 0, "total": 0}
    expected["pipe.ipynb"] = dict(zero, error="not a regular file")
    expected["link.ipynb"] = dict(zero, error="symbolic link")
    # another copy of the course elsewhere on the machine (a second clone): hidden by the allow-list
    other = tmp_path / "other-clone" / "solutions"
    other.mkdir(parents=True)
    shutil.copy(SOLUTIONS / f"{LESSON}.ipynb", other / f"{LESSON}.ipynb")
    lesson = load_lesson(LESSON)
    before_inputs, before_trusted = _hashes(submissions), trusted_fingerprint(lesson)
    settings = Settings(
        cell_timeout=40, other_cell_timeout=300, submission_timeout=600, memory_gb=4.5, workers=2
    )
    results = grade_folder(LESSON, submissions, tmp_path / "out", settings)

    assert _hashes(submissions) == before_inputs, "an input file was changed or deleted"
    assert trusted_fingerprint(lesson) == before_trusted, "a course file was changed during grading"
    captured = capfd.readouterr()
    assert "RSL-RAW-FD-MARKER" not in captured.out + captured.err, (
        "a kernel wrote to the grader's stdout/stderr"
    )
    with open(tmp_path / "out" / f"{LESSON}.csv", newline="", encoding="utf-8") as f:
        rows = {row["submission"]: row for row in csv.DictReader(f)}
    assert set(rows) == {_csv_name(n) for n in expected}, "every input file gets exactly one row"
    assert not (tmp_path / "out" / f"{LESSON}.partial.jsonl").exists()
    report = json.loads((tmp_path / "out" / f"{LESSON}.json").read_text())
    messages = {s["submission"]: s for s in report["submissions"]}
    problems = []
    for name, want in expected.items():
        shown = _csv_name(name)
        row = rows[shown]
        got = {
            "check00_next_token_probs": float(row["check00_next_token_probs"]),
            "check00_top_k": float(row["check00_top_k"]),
            "total": float(row["total"]),
        }
        for key in got:
            if got[key] != want[key]:
                problems.append(
                    f"{name}: {key} = {got[key]}, expected {want[key]}; "
                    f"error={row['error']!r}; {messages[shown.lstrip(chr(39))]['cells']}"
                )
        if want["error"] and want["error"] not in row["error"]:
            problems.append(f"{name}: error column {row['error']!r} lacks {want['error']!r}")
        if not want["error"] and row["error"]:
            problems.append(f"{name}: unexpected error {row['error']!r}")
    assert not problems, "\n".join(problems)
    # the JSON explains each cell; a hostile print never becomes the verdict
    assert "not implemented" in messages["honest_stub.ipynb"]["cells"]["check00_top_k"]["message"]
    assert (
        "timed out"
        in messages["infinite_loop.ipynb"]["cells"]["check00_next_token_probs"]["message"]
    )
    assert "MemoryError" in messages["memory_bomb.ipynb"]["cells"]["check00_top_k"]["message"]
    assert messages["big_output.ipynb"]["output_chars"] >= 10_000_000
    assert len(results) == len(expected)
    # honest work that was moved around is graded where the student put it, and the row says so
    assert any("deleted" in n for n in messages["honest_no_check_cells.ipynb"]["notes"])
    for name, reason in (
        ("record_symlink.ipynb", "not a regular file"),
        ("record_fifo.ipynb", "not a regular file"),
        ("record_callback_flood.ipynb", "next_token_probs"),
    ):
        message = messages[name]["cells"]["check00_next_token_probs"]["message"]
        assert reason in message, (name, message)
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else ""
    assert not hostname or hostname not in json.dumps(report), (
        "a linked file's content reached the feedback"
    )
    if isolated:
        assert all("allow-list" in s["isolation"] for s in report["submissions"] if s["isolation"])


def _answers(lesson: str) -> dict[str, str]:
    """grade_id -> source of each exercise cell of the lesson's solution (markers and all: they are
    comments)."""
    solution = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: c.source
        for c in solution.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


FORGED_TEMPORARY_HOOKS = (
    "checks.check_temporary_hooks = lambda *args, **kwargs: print('✅ 02.9 temporary_hooks')"
    "\n\n@contextmanager\ndef temporary_hooks(model, fwd_hooks):\n    yield model\n"
)


@pytest.mark.slow
def test_lesson02_temporary_hooks_is_decided_by_the_grader(tmp_path):
    """02.9 in real kernels: its context manager's effects on the model are recorded there and
    replayed by the grader, so the one-line forgery (the check replaced by a printed pass) that the
    kernel's own verdict used to reward scores 0, and the solution scores every point."""
    answers = _answers("02_hooks")
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    for name, temporary_hooks in (("honest", None), ("forged", FORGED_TEMPORARY_HOOKS)):
        nb = nbformat.read(NOTEBOOKS / "02_hooks.ipynb", as_version=4)
        for cell in nb.cells:
            gid = cell.metadata.get("nbgrader", {}).get("grade_id")
            if gid in answers:
                replace = gid == "ex02_temporary_hooks" and temporary_hooks
                cell.source = temporary_hooks if replace else answers[gid]
        nbformat.write(nb, submissions / f"{name}.ipynb")
    settings = Settings(cell_timeout=120, submission_timeout=900, memory_gb=4.5, workers=1)
    results = {
        r.submission: r for r in grade_folder("02_hooks", submissions, tmp_path / "out", settings)
    }
    honest, forged = results["honest.ipynb"], results["forged.ipynb"]
    assert honest.total == honest.max_points == 9, honest.cells
    hooks_cell = forged.cells["check02_temporary_hooks"]
    assert hooks_cell["points"] == 0 and "no recorded output" in hooks_cell["message"], hooks_cell
    assert forged.total == 8, forged.cells


# ------------------------------------------------------------------ slow: real nbgrader

NBGRADER_VENV = ROOT / ".venv-nbgrader"


def _nbgrader_venv() -> Path:
    script = ROOT / "scripts" / "setup_nbgrader_venv.sh"
    done = subprocess.run(
        ["bash", str(script), str(NBGRADER_VENV)], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        message = f"cannot create the nbgrader venv (needs PyPI access once): {done.stderr[-500:]}"
        if os.environ.get("RSL_REQUIRE_E2E") == "1":  # set by .ci/run: CI may not skip this
            pytest.fail(message)
        pytest.skip(message)
    return NBGRADER_VENV / "bin" / "nbgrader"


@pytest.mark.slow
def test_nbgrader_generate_and_autograde(tmp_path):
    nbgrader = _nbgrader_venv()
    course = tmp_path / "course"
    (course / "source" / "lesson00").mkdir(parents=True)
    shutil.copy(SOLUTIONS / f"{LESSON}.ipynb", course / "source" / "lesson00" / f"{LESSON}.ipynb")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'residual-stream-lab'\n"
        "c.CourseDirectory.db_assignments = [dict(name='lesson00')]\n"
        "c.CourseDirectory.db_students = [dict(id='alice'), dict(id='bob')]\n"
        # generous limits: on a loaded 2-core machine output can lag well behind nbclient's 4 s
        # default
        "c.Execute.timeout = 600\n"
        "c.Execute.iopub_timeout = 120\n"
        "c.Execute.startup_timeout = 300\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHON"))}
    env["JUPYTER_PATH"] = str(NBGRADER_VENV / "share" / "jupyter")
    # nbgrader runs `alembic`
    env["PATH"] = f"{NBGRADER_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"

    def run(*args):
        done = subprocess.run(
            [str(nbgrader), *args],
            cwd=course,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run("generate_assignment", "lesson00", "--force")
    released = course / "release" / "lesson00" / f"{LESSON}.ipynb"
    text = released.read_text()
    assert (
        "BEGIN HIDDEN TESTS" not in text
        and "hidden=True" not in text
        and "BEGIN SOLUTION" not in text
    )
    assert "raise NotImplementedError()" in text

    release = nbformat.read(released, as_version=4)
    # nbgrader's student version is ours, cell for cell (same kind, text and grade_id), with one
    # known difference: nbgrader keeps our `#| export MODULE` first line (a comment to it), which
    # our generator removes; that line alone is set aside, and only in nbgrader's copy
    from course_utils.authoring.exercise_format import without_export_marker

    ours = nbformat.read(NOTEBOOKS / f"{LESSON}.ipynb", as_version=4)
    assert not any(c.source.startswith("#| export") for c in ours.cells)

    def cells(nb):
        return [
            (
                c.cell_type,
                without_export_marker(c.source),
                c.metadata.get("nbgrader", {}).get("grade_id"),
            )
            for c in nb.cells
        ]

    assert len(release.cells) == len(ours.cells), (len(release.cells), len(ours.cells))
    differ = [i for i, (a, b) in enumerate(zip(cells(release), cells(ours), strict=True)) if a != b]
    assert not differ, (
        f"nbgrader's released notebook differs from notebooks/{LESSON}.ipynb in cells {differ}; "
        f"first: {cells(release)[differ[0]]!r} != {cells(ours)[differ[0]]!r}"
    )
    answers = _answers(LESSON)
    alice = nbformat.from_dict(json.loads(json.dumps(release)))
    for cell in alice.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell.source = answers[gid]  # the solution, markers and all (they are comments)
    for student, nb in (("alice", alice), ("bob", release)):
        folder = course / "submitted" / student / "lesson00"
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{LESSON}.ipynb")
        (folder / "timestamp.txt").write_text("2026-01-01 00:00:00.000000 UTC")

    run("autograde", "lesson00", "--force")
    assert (course / "gradebook.db").is_file()
    run("export")
    with open(course / "grades.csv", newline="") as f:
        scores = {
            row["student_id"]: (float(row["score"]), float(row["max_score"]))
            for row in csv.DictReader(f)
        }
    assert scores == {"alice": (2.0, 2.0), "bob": (0.0, 2.0)}, scores
