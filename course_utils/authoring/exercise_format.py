"""The single-source exercise format, and the student notebook generated from a solution notebook.

``solutions/NN_topic.ipynb`` is the only source. It uses nbgrader's conventions, so an instructor
can hand it to nbgrader unchanged:

* an exercise cell has metadata ``nbgrader.solution = true`` and a ``grade_id``; the learner's part
  sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* a check cell has ``nbgrader.grade = true``, ``locked = true``, ``points`` and a ``grade_id``; it
  calls ``course_utils.checks`` and may hold ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``;
* the first code cell is the setup cell from ``course_utils.colab``;
* a code cell (not a check) whose first line is ``#| export MODULE`` is also the text of
  ``course_utils/from_solutions/MODULE.py`` (see ``course_utils.authoring.export``).

``generate_student`` turns a solution notebook into ``notebooks/NN_topic.ipynb``: each solution
region becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` (what nbgrader writes), hidden
tests and export markers are removed, outputs cleared.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import nbformat

from ..colab import SETUP_MARKER, setup_cell_source

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
EXPORT_MARKER = "#| export"
_EXPORT_LINE = re.compile(r"#\|\s*export\s+(?P<module>[A-Za-z_][A-Za-z0-9_]*)\s*")
_KEEP_METADATA = ("kernelspec", "language_info")


class FormatError(ValueError):
    """A solution notebook breaks the exercise format; the message names the cell."""


@dataclass
class Exercise:
    """One graded pair: the exercise cell and the check cell(s) that follow it."""

    grade_id: str
    cell_index: int
    check_ids: list[str]


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def nbgrader_metadata(grade_id: str, solution: bool, points: float = 1) -> dict:
    """The metadata of a new exercise cell (``solution=True``: an autograded answer, unlocked) or
    check cell (graded, locked, worth ``points``), as nbgrader writes it (schema version 3)."""
    meta = {
        "grade": not solution,
        "grade_id": grade_id,
        "locked": not solution,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if not solution:
        meta["points"] = points
    return {"nbgrader": meta}


def is_exercise(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("solution"))


def is_check(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("grade"))


def export_target(cell, where: str = "cell") -> str | None:
    """The module named by the cell's ``#| export MODULE`` first line, or None."""
    if cell.cell_type != "code":
        return None
    lines = cell.source.split("\n")
    for number, line in enumerate(lines[1:], 2):
        if line.lstrip().startswith(EXPORT_MARKER):
            raise FormatError(
                f"{where}: '{EXPORT_MARKER}' must be the cell's first line (line {number})"
            )
    if not lines[0].startswith(EXPORT_MARKER):
        return None
    match = _EXPORT_LINE.fullmatch(lines[0])
    if not match:
        raise FormatError(
            f"{where}: write the export marker as '{EXPORT_MARKER} MODULE' (a module name)"
        )
    if is_check(cell):
        raise FormatError(f"{where}: a check cell cannot be exported")
    return match.group("module")


def without_export_marker(source: str) -> str:
    """``source`` without its ``#| export MODULE`` first line (unchanged if it has none)."""
    first, _, rest = source.partition("\n")
    return rest if first.startswith(EXPORT_MARKER) else source


def replace_regions(
    source: str, begin: str, end: str, stub: tuple[str, ...] | None, where: str
) -> str:
    """``source`` with each ``begin``…``end`` region replaced by ``stub`` (indented like ``begin``),
    or removed when ``stub`` is None. The marker lines themselves always go."""
    lines = source.split("\n")
    out: list[str] = []
    inside = False
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise FormatError(f"{where}: nested '{begin}' at line {number}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            if stub:
                out.extend(indent + s for s in stub)
        elif stripped == end:
            if not inside:
                raise FormatError(f"{where}: '{end}' without '{begin}' at line {number}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise FormatError(f"{where}: '{begin}' is never closed")
    return "\n".join(out)


def exercises(nb) -> list[Exercise]:
    """The exercises of a solution notebook, each with the checks up to the next exercise."""
    found: list[Exercise] = []
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        meta = nbgrader_meta(cell)
        if not (is_exercise(cell) or is_check(cell)):
            continue
        grade_id = meta.get("grade_id")
        if not grade_id or not re.fullmatch(r"[A-Za-z0-9_\-.]+", grade_id):
            raise FormatError(
                f"cell {index}: nbgrader cell needs a grade_id of letters, digits, _ - ."
            )
        if grade_id in seen:
            raise FormatError(f"cell {index}: grade_id {grade_id!r} is used twice")
        seen.add(grade_id)
        where = f"cell {index} ({grade_id})"
        if is_exercise(cell):
            if BEGIN_SOLUTION not in cell.source:
                raise FormatError(f"{where}: exercise cell has no '{BEGIN_SOLUTION}'")
            found.append(Exercise(grade_id, index, []))
        else:
            if not meta.get("locked") or "points" not in meta:
                raise FormatError(f"{where}: check cells must be locked and have points")
            if not found:
                raise FormatError(f"{where}: check cell before any exercise")
            found[-1].check_ids.append(grade_id)
    for exercise in found:
        if not exercise.check_ids:
            raise FormatError(f"exercise {exercise.grade_id} has no check cell after it")
    return found


def setup_cell_index(nb) -> int:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            if not cell.source.startswith(SETUP_MARKER):
                raise FormatError(
                    f"cell {index}: the first code cell must be the course setup cell"
                )
            return index
    raise FormatError("notebook has no code cell")


def with_current_setup_cell(nb):
    """A copy of ``nb`` whose setup cell holds the current ``setup_cell_source()``."""
    nb = copy.deepcopy(nb)
    nb.cells[setup_cell_index(nb)].source = setup_cell_source()
    return nb


def generate_student(solution) -> nbformat.NotebookNode:
    """The student notebook for a solution notebook (a new object; the input is not changed)."""
    exercises(solution)  # validates the format
    nb = with_current_setup_cell(solution)
    for index, cell in enumerate(nb.cells):
        where = f"cell {index}"
        if cell.cell_type == "code":
            if export_target(cell, where):
                cell.source = without_export_marker(cell.source)
            if is_exercise(cell):
                cell.source = replace_regions(
                    cell.source, BEGIN_SOLUTION, END_SOLUTION, STUB, where
                )
            elif BEGIN_SOLUTION in cell.source:
                raise FormatError(
                    f"{where}: '{BEGIN_SOLUTION}' outside an exercise cell (set nbgrader.solution)"
                )
            cell.source = replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, None, where)
            cell.source = cell.source.rstrip("\n")
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    kept = {k: nb.metadata[k] for k in _KEEP_METADATA if k in nb.metadata}
    nb.metadata = nbformat.NotebookNode(kept)
    return nb


def dumps(nb) -> str:
    """The notebook's file text, as the generator writes it."""
    return nbformat.writes(nb, version=4) + "\n"
