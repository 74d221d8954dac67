"""Every file ``make notebooks`` writes, and the drift check that fails when one is out of date.

Generated from the solution notebooks: the student notebooks, the solutions' setup cells, the
README's course map and the modules exported from solution cells (``course_utils/from_solutions``).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from .. import paths
from .course_map import course_map, readme_with_map
from .exercise_format import dumps, generate_student, with_current_setup_cell
from .export import INIT_TEXT, exported_modules, hand_copies

GENERATED_MARK = "GENERATED from"  # in the first line of every generated module but __init__


def read_solutions() -> dict[Path, nbformat.NotebookNode]:
    return {path: nbformat.read(path, as_version=4) for path in paths.lesson_paths()}


def expected_files(lessons: list[Path] | None = None) -> dict[Path, str]:
    """Every generated file and its text; notebooks only for ``lessons`` when given."""
    solutions = read_solutions()
    files = {}
    for path in lessons or solutions:
        files[path] = dumps(with_current_setup_cell(solutions[path]))
        files[paths.NOTEBOOKS / path.name] = dumps(generate_student(solutions[path]))
    if paths.README.exists():
        files[paths.README] = readme_with_map(paths.README.read_text(), course_map(solutions))
    files[paths.FROM_SOLUTIONS / "__init__.py"] = INIT_TEXT
    for module, text in exported_modules(solutions).items():
        files[paths.FROM_SOLUTIONS / f"{module}.py"] = text
    return files


def leftover_files(expected: dict[Path, str]) -> list[Path]:
    """Generated files that no solution produces any more (a renamed lesson, a removed marker)."""
    lessons = {p.name for p in paths.lesson_paths()}
    extra = [p for p in sorted(paths.NOTEBOOKS.glob("*.ipynb")) if p.name not in lessons]
    for path in sorted(paths.FROM_SOLUTIONS.glob("*.py")):
        if path not in expected and GENERATED_MARK in path.read_text().split("\n", 1)[0]:
            extra.append(path)
    return extra


def out_of_date() -> list[Path]:
    """Generated files whose committed text differs from what the solutions produce, or that no
    solution produces any more."""
    expected = expected_files()
    stale = [p for p, text in expected.items() if not p.exists() or p.read_text() != text]
    return stale + leftover_files(expected)


def duplicated_exports() -> list[str]:
    """Hand-written definitions in course_utils with the name of an exported one."""
    return hand_copies(exported_modules(read_solutions()), paths.ROOT / "course_utils")


def write(lessons: list[Path] | None = None) -> list[Path]:
    """Write what is out of date (notebooks only for ``lessons`` when given) and delete generated
    modules no solution exports any more; returns the paths written or deleted."""
    paths.NOTEBOOKS.mkdir(exist_ok=True)
    paths.FROM_SOLUTIONS.mkdir(exist_ok=True)
    changed = []
    expected = expected_files(lessons)
    for path, text in expected.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    for path in leftover_files(expected):
        if path.suffix == ".py":
            path.unlink()
            changed.append(path)
    return changed
