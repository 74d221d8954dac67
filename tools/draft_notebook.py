"""Authoring aid: turn a percent-format draft (.py) into a solution notebook skeleton.

The solution notebook is the course's single source; this only saves typing JSON for a first draft.
Do not commit the draft. The draft is jupytext's percent format; a code cell's title says its role:

    # %% [markdown]            markdown; each line starts with "# "
    # %%                       plain code
    # %% exercise GRADE_ID     exercise cell (nbgrader solution cell, holds ### BEGIN/END SOLUTION)
    # %% check GRADE_ID [points=N]   check cell (nbgrader graded, locked; 1 point unless given)
    # %% setup                 the course setup cell (its text is filled in by the generator)

Usage: python tools/draft_notebook.py draft.py solutions/NN_topic.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

from course_utils.authoring.exercise_format import nbgrader_metadata
from course_utils.colab import setup_cell_source

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _cell(cell) -> nbformat.NotebookNode:
    """The notebook cell for one jupytext cell, its role read from the title."""
    if cell.cell_type == "markdown":
        return nbformat.v4.new_markdown_cell(cell.source)
    role, *rest = cell.metadata.get("title", "").split() or [""]
    if role == "setup":
        return nbformat.v4.new_code_cell(setup_cell_source())
    if role in ("exercise", "check"):
        if len(rest) != 1:
            raise ValueError(f"'# %% {role}' needs exactly one GRADE_ID, got {rest}")
        points = int(cell.metadata.get("points", 1))
        meta = nbgrader_metadata(rest[0], solution=role == "exercise", points=points)
        return nbformat.v4.new_code_cell(cell.source, metadata=meta)
    if role:
        raise ValueError(f"unknown cell marker '# %% {role}': use exercise, check or setup")
    return nbformat.v4.new_code_cell(cell.source)


def build(text: str) -> nbformat.NotebookNode:
    """The solution notebook skeleton for a percent-format draft."""
    draft = jupytext.reads(text, fmt="py:percent")
    cells = [
        _cell(cell) for cell in draft.cells if cell.source.strip() or cell.metadata.get("title")
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    source, target = map(Path, sys.argv[1:3])
    nbformat.write(build(source.read_text()), target)
    print(f"wrote {target}")
