"""Where the course's files live in a checkout; the generator and the grader both need these.

``ROOT`` is the repository root (the folder holding ``course_utils/``): the course runs from a
checkout, installed with ``pip install -e .``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"  # the single source: solutions/NN_topic.ipynb
NOTEBOOKS = ROOT / "notebooks"  # generated student notebooks
README = ROOT / "README.md"  # holds the generated course map
FROM_SOLUTIONS = ROOT / "course_utils" / "from_solutions"  # generated modules (exported cells)


def lesson_paths() -> list[Path]:
    """The solution notebooks, in lesson order."""
    return sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))
