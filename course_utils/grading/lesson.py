"""The trusted side of a lesson, read from ``solutions/NN_topic.ipynb``, and the checks of
submissions.

``Lesson`` lists the graded cells (nbgrader ``grade`` cells: exercise checks, and quiz questions
when their ``grade_id`` starts with ``quiz``) with their full trusted source, hidden tests included,
and which names in each of them the learner controls (the "learner names", found by a taint
analysis: names defined in exercise cells, and names computed from them in later cells).

``read_submission`` turns one input file into a notebook or a clear error; ``kernel_plan`` lists the
cells a submission's kernel runs: the student's own cells, with every graded cell replaced by (or,
when missing, given) its trusted version, wrapped by the recorder's ``begin``/``end``.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from ..exercises import SOLUTIONS, exercises, is_check, is_exercise, nbgrader_meta


def grade_id_of(cell) -> str | None:
    """The nbgrader grade_id of a cell of an untrusted notebook, or None (never raises)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    gid = meta.get("grade_id") if isinstance(meta, dict) else None
    return gid if isinstance(gid, str) else None


class SubmissionError(ValueError):
    """An input file that cannot be graded; the message goes into the error column."""


@dataclass
class GradeCell:
    grade_id: str
    index: int  # cell index in the solution notebook
    source: str  # trusted source, hidden tests included
    points: float
    exercise: str  # grade_id of the exercise cell it checks
    learner_names: list[str]

    @property
    def kind(self) -> str:
        return "quiz" if self.grade_id.startswith("quiz") else "check"


@dataclass
class Lesson:
    name: str
    path: Path
    notebook: nbformat.NotebookNode
    grade_cells: list[GradeCell]
    exercise_ids: list[str]
    other_lessons: dict[str, str] = field(default_factory=dict)  # grade_id -> lesson name

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.grade_cells)

    def cell(self, grade_id: str) -> GradeCell:
        return next(c for c in self.grade_cells if c.grade_id == grade_id)


def resolve_lesson_path(lesson: str) -> Path:
    """``"00"``, ``"00_first_look"``, ``"00_first_look.ipynb"`` or a path -> the solution
    notebook."""
    candidate = Path(lesson)
    if candidate.suffix == ".ipynb" and candidate.is_file():
        return candidate.resolve()
    stem = candidate.name.removesuffix(".ipynb")
    matches = sorted(SOLUTIONS.glob(f"{stem}.ipynb")) or sorted(SOLUTIONS.glob(f"{stem}_*.ipynb"))
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb")))
        raise SystemExit(f"no single lesson matches {lesson!r}; lessons: {known}")
    return matches[0]


def _assigned(node: ast.AST) -> set[str]:
    """Names a top-level statement binds (imports excluded: a module is never the learner's
    answer)."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
            names.add(sub.id)
    return names


def _loaded(node: ast.AST) -> set[str]:
    return {
        sub.id
        for sub in ast.walk(node)
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load)
    }


def _parse(source: str, where: str) -> ast.Module:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError as error:
        raise ValueError(f"{where}: cannot parse: {error}") from None


def load_lesson(lesson: str | Path) -> Lesson:
    path = resolve_lesson_path(str(lesson))
    nb = nbformat.read(path, as_version=4)
    found = exercises(nb)  # validates the format
    owner = {check: ex.grade_id for ex in found for check in ex.check_ids}
    tainted: set[str] = set()
    grade_cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree = _parse(cell.source, f"{path.name} cell {index}")
        if is_exercise(cell):
            for node in tree.body:
                tainted |= _assigned(node)
        elif is_check(cell):
            meta = nbgrader_meta(cell)
            names = sorted(_loaded(tree) & tainted)
            grade_cells.append(
                GradeCell(
                    meta["grade_id"],
                    index,
                    cell.source,
                    float(meta["points"]),
                    owner[meta["grade_id"]],
                    names,
                )
            )
        else:
            for node in tree.body:
                bound = _assigned(node)
                if _loaded(node) & tainted:
                    tainted |= bound
                else:
                    tainted -= bound
    others = {}
    for other in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb")):
        if other.resolve() == path.resolve():
            continue
        try:
            other_nb = nbformat.read(other, as_version=4)
        except Exception:  # another helper's half-written lesson must not stop grading this one
            continue
        for cell in other_nb.cells:
            gid = nbgrader_meta(cell).get("grade_id")
            if gid:
                others[gid] = other.stem
    return Lesson(path.stem, path, nb, grade_cells, [e.grade_id for e in found], others)


MAX_SUBMISSION_BYTES = 50 << 20


def read_submission(data: bytes, lesson: Lesson) -> nbformat.NotebookNode:
    """The submission as a notebook, or ``SubmissionError`` saying clearly why not."""
    if not data.strip():
        raise SubmissionError("empty file")
    if len(data) > MAX_SUBMISSION_BYTES:
        raise SubmissionError(
            f"file is {len(data) >> 20} MiB; notebooks over {MAX_SUBMISSION_BYTES >> 20} MiB are "
            "refused"
        )
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise SubmissionError(
            f"not a notebook: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except json.JSONDecodeError as error:
        raise SubmissionError(
            f"not a notebook: malformed JSON ({error.msg} at line {error.lineno}, column "
            f"{error.colno})"
        ) from None
    except RecursionError:
        raise SubmissionError("not a notebook: JSON nested too deeply") from None
    if isinstance(raw, dict) and "nbformat" in raw and raw["nbformat"] != 4:
        raise SubmissionError(
            f"unsupported notebook format nbformat={raw['nbformat']!r}: expected 4 "
            "(open and save it with a current Jupyter or JupyterLab)"
        )
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        raise SubmissionError("not a notebook: the JSON has no 'cells' list")
    if raw.get("nbformat") != 4:
        raise SubmissionError("unsupported notebook format: no nbformat=4 field")
    try:
        nb = nbformat.from_dict(raw)
        if not isinstance(nb.cells, list) or not all(
            isinstance(c, dict) and c.get("cell_type") in ("code", "markdown", "raw")
            for c in nb.cells
        ):
            raise SubmissionError(
                "not a valid notebook: 'cells' must be a list of code/markdown/raw cells"
            )
        for cell in nb.cells:
            if isinstance(cell.get("source"), list):
                cell["source"] = "".join(str(s) for s in cell["source"])
            if not isinstance(cell.get("source", ""), str):
                raise SubmissionError("not a valid notebook: a cell's source is not text")
            cell.setdefault("source", "")
            cell.setdefault("metadata", {})
            if not isinstance(cell["metadata"], dict):
                raise SubmissionError("not a valid notebook: a cell's metadata is not an object")
    except SubmissionError:
        raise
    except Exception as error:
        raise SubmissionError(f"not a valid notebook: {type(error).__name__}: {error}") from None
    ids = {grade_id_of(c) for c in nb.cells} - {None}
    ours = set(lesson.exercise_ids) | {c.grade_id for c in lesson.grade_cells}
    if not ids & ours:
        foreign = sorted({lesson.other_lessons[i] for i in ids if i in lesson.other_lessons})
        if foreign:
            raise SubmissionError(
                f"wrong lesson: this is a notebook of lesson {', '.join(foreign)}, not "
                f"{lesson.name}"
            )
        if ids:
            raise SubmissionError(
                f"wrong lesson: none of {lesson.name}'s exercise cells "
                f"({', '.join(lesson.exercise_ids)}) "
                f"is in this notebook (it has {', '.join(sorted(map(str, ids))[:4])})"
            )
        raise SubmissionError(
            f"no exercise cells found: the notebook has no nbgrader cell metadata, so it is not "
            f"lesson {lesson.name}'s notebook (or its metadata was stripped)"
        )
    return nb


@dataclass
class PlanCell:
    kind: str  # "student", "begin", "check", "end"
    source: str
    grade_id: str | None = None
    student_index: int | None = None


def _released_source(source: str) -> str:
    """A trusted check cell as the student notebook shows it (hidden tests removed)."""
    from ..authoring.exercise_format import BEGIN_HIDDEN, END_HIDDEN, replace_regions

    try:
        return replace_regions(source, BEGIN_HIDDEN, END_HIDDEN, None, "check cell").rstrip("\n")
    except Exception:  # a malformed trusted cell is caught by the lesson's own tests
        return source


def kernel_plan(nb, lesson: Lesson) -> tuple[list[PlanCell], list[str]]:
    """Cells to run in the student's kernel, and notes for the row (what was moved or restored).

    As in nbgrader, each trusted check runs where the student's copy of its check cell is (the
    student's copy itself is never run). A check cell the student deleted runs at a forgiving place:
    just before the next graded cell the notebook still has (so every exercise, scratch and helper
    cell above that point has run), or at the end of the notebook when no graded cell follows.
    Student cells after the last check cannot change any grade and are not run.
    """
    order = [c.grade_id for c in lesson.grade_cells]
    known_grade = set(order)
    plan: list[PlanCell] = []
    placed: set[str] = set()
    notes = []

    def place(grade: GradeCell) -> None:
        placed.add(grade.grade_id)
        plan.append(PlanCell("begin", "", grade.grade_id))
        plan.append(PlanCell("check", grade.source, grade.grade_id))
        plan.append(PlanCell("end", "", grade.grade_id))

    present = [grade_id_of(c) for c in nb.cells if c.get("cell_type") == "code"]
    present_checks = [g for g in present if g in known_grade]
    for exercise in lesson.exercise_ids:
        if exercise not in present:
            notes.append(f"exercise cell {exercise} is missing")
    for index, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        gid = grade_id_of(cell)
        if gid in known_grade and gid not in placed:
            # deleted check cells that come before this one in the lesson run first, here
            for missing in order[: order.index(gid)]:
                if missing not in placed and missing not in present_checks:
                    notes.append(
                        f"check cell {missing} was deleted: the trusted check ran before {gid}"
                    )
                    place(lesson.cell(missing))
            grade = lesson.cell(gid)
            if cell.get("source", "").strip() != _released_source(grade.source).strip():
                notes.append(
                    f"check cell {gid} had been edited: the original check ran in its place"
                )
            place(grade)
            continue
        if gid in known_grade:
            notes.append(f"check cell {gid} appeared twice: it ran once, at its first copy")
            continue
        plan.append(PlanCell("student", cell.get("source", ""), gid, index))
    for grade in lesson.grade_cells:
        if grade.grade_id not in placed:
            notes.append(
                f"check cell {grade.grade_id} was deleted: the trusted check ran at the end"
            )
            place(grade)
    last = max(i for i, c in enumerate(plan) if c.kind == "end")
    return plan[: last + 1], notes  # cells after the last check cannot change any grade
