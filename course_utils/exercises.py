"""The single-source exercise format, and the generator of student notebooks.

``solutions/NN_topic.ipynb`` is the only source. It uses nbgrader's conventions, so an instructor can
hand it to nbgrader unchanged:

* an exercise cell has metadata ``nbgrader.solution = true`` and a ``grade_id``; the learner's part
  sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``;
* a check cell has ``nbgrader.grade = true``, ``locked = true``, ``points`` and a ``grade_id``; it calls
  ``course_utils.checks`` and may hold ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``;
* the first code cell is the setup cell from ``course_utils.colab``.

``generate_student`` turns a solution notebook into ``notebooks/NN_topic.ipynb``: each solution region
becomes ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` (what nbgrader writes), hidden tests are
removed, outputs cleared. Usage::

    python -m course_utils.exercises generate [PATH] # rewrite notebooks/ (and solutions' setup cells)
    python -m course_utils.exercises check           # exit 1 if anything is out of date
    python -m course_utils.exercises execute [PATH]  # re-run solutions, saving their outputs
"""

from __future__ import annotations

import copy
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from .colab import SETUP_MARKER, colab_url, setup_cell_source

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
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


def is_exercise(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("solution"))


def is_check(cell) -> bool:
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("grade"))


def _replace_regions(source: str, begin: str, end: str, stub: tuple[str, ...] | None, where: str) -> str:
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
            raise FormatError(f"cell {index}: nbgrader cell needs a grade_id of letters, digits, _ - .")
        if grade_id in seen:
            raise FormatError(f"cell {index}: grade_id {grade_id!r} is used twice")
        seen.add(grade_id)
        if is_exercise(cell):
            if BEGIN_SOLUTION not in cell.source:
                raise FormatError(f"cell {index} ({grade_id}): exercise cell has no '{BEGIN_SOLUTION}'")
            found.append(Exercise(grade_id, index, []))
        else:
            if not meta.get("locked") or "points" not in meta:
                raise FormatError(f"cell {index} ({grade_id}): check cells must be locked and have points")
            if not found:
                raise FormatError(f"cell {index} ({grade_id}): check cell before any exercise")
            found[-1].check_ids.append(grade_id)
    for exercise in found:
        if not exercise.check_ids:
            raise FormatError(f"exercise {exercise.grade_id} has no check cell after it")
    return found


def setup_cell_index(nb) -> int:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            if not cell.source.startswith(SETUP_MARKER):
                raise FormatError(f"cell {index}: the first code cell must be the course setup cell")
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
            if is_exercise(cell):
                cell.source = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, STUB, where)
            elif BEGIN_SOLUTION in cell.source:
                raise FormatError(f"{where}: '{BEGIN_SOLUTION}' outside an exercise cell (set nbgrader.solution)")
            cell.source = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, None, where).rstrip("\n")
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata = nbformat.NotebookNode({k: nb.metadata[k] for k in _KEEP_METADATA if k in nb.metadata})
    return nb


def dumps(nb) -> str:
    return nbformat.writes(nb, version=4) + "\n"


def lesson_paths() -> list[Path]:
    return sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


README = ROOT / "README.md"
MAP_START, MAP_END = "<!-- course map: generated by `make notebooks` -->", "<!-- end of course map -->"


def lesson_summary(nb) -> tuple[str, str]:
    """(title, time estimate) from the first markdown cell: '# Lesson NN — Title' and '**Time:** about …'."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title = re.search(r"^#\s+(.+)$", first, re.M)
    time = re.search(r"\*\*Time:\*\*\s*([^.*\n]+)", first)
    return (title.group(1).strip() if title else "?"), (time.group(1).strip() if time else "?")


def lesson_objectives(nb) -> list[str]:
    """The bullets after '**You will:**' in the first markdown cell, each joined onto one line."""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    if "**You will:**" not in first:
        return []
    objectives: list[str] = []
    for line in first.split("**You will:**", 1)[1].splitlines()[1:]:
        if line.startswith("- "):
            objectives.append(line[2:].strip())
        elif line.startswith("  ") and objectives:
            objectives[-1] += " " + line.strip()
        else:
            break
    return objectives


def course_map(solutions: dict[Path, nbformat.NotebookNode]) -> str:
    """The README's course map: a table of lessons, then each lesson's objectives."""
    rows = ["| lesson | time | student notebook | solution | Colab |", "| --- | --- | --- | --- | --- |"]
    details = []
    for path, nb in solutions.items():
        title, time = lesson_summary(nb)
        student = f"notebooks/{path.name}"
        badge = f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(student)})"
        rows.append(f"| {title} | {time} | [{student}]({student}) | [solutions/{path.name}](solutions/{path.name}) | {badge} |")
        objectives = lesson_objectives(nb)
        if objectives:
            details.append(f"**{title}** ({time}). You will:\n" + "\n".join(f"- {o}" for o in objectives))
    return "\n".join(rows) + ("\n\n" + "\n\n".join(details) if details else "")


def readme_with_map(text: str, table: str) -> str:
    if MAP_START not in text or MAP_END not in text:
        raise FormatError(f"README.md must contain the markers {MAP_START!r} and {MAP_END!r}")
    head, rest = text.split(MAP_START, 1)
    _, tail = rest.split(MAP_END, 1)
    return f"{head}{MAP_START}\n{table}\n{MAP_END}{tail}"


def expected_files(paths: list[Path] | None = None) -> dict[Path, str]:
    """Every generated file (student notebooks, solution setup cells, README course map) and its text."""
    files = {}
    solutions = {}
    for path in lesson_paths():
        solutions[path] = nbformat.read(path, as_version=4)
    for path in paths or solutions:
        files[path] = dumps(with_current_setup_cell(solutions[path]))
        files[NOTEBOOKS / path.name] = dumps(generate_student(solutions[path]))
    if README.exists():
        files[README] = readme_with_map(README.read_text(), course_map(solutions))
    return files


def out_of_date() -> list[Path]:
    stale = []
    for path, text in expected_files().items():
        if not path.exists() or path.read_text() != text:
            stale.append(path)
    extra = {p.name for p in NOTEBOOKS.glob("*.ipynb")} - {p.name for p in lesson_paths()}
    stale.extend(NOTEBOOKS / name for name in sorted(extra))
    return stale


def execute(path: Path, timeout: int = 900) -> None:
    """Run a solution notebook top to bottom in a fresh kernel and save it with its outputs."""
    from nbclient import NotebookClient

    nb = with_current_setup_cell(nbformat.read(path, as_version=4))
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    path.write_text(dumps(nb))


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "execute":
        for path in [Path(a).resolve() for a in argv[1:]] or lesson_paths():
            print(f"executing {path.relative_to(ROOT)}", flush=True)
            execute(path)
        return 0
    if command == "generate":
        NOTEBOOKS.mkdir(exist_ok=True)
        for path, text in expected_files([Path(a).resolve() for a in argv[1:]]).items():
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
                print(f"wrote {path.relative_to(ROOT)}")
        return 0
    if command == "check":
        stale = out_of_date()
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)}")
        if stale:
            print("Run `make notebooks` (python -m course_utils.exercises generate) and commit the result.")
        return 1 if stale else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
