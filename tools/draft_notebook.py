"""Authoring aid: turn a percent-format draft (.py) into a solution notebook skeleton.

The solution notebook is the course's single source; this only saves typing JSON for a first draft.
Do not commit the draft. Cell markers:

    # %% [markdown]            markdown; each line starts with "# "
    # %%                       plain code
    # %% exercise GRADE_ID     exercise cell (nbgrader solution cell, holds ### BEGIN/END SOLUTION)
    # %% check GRADE_ID [points=N]   check cell (nbgrader graded, locked)
    # %% setup                 the course setup cell (its text is filled in by the generator)

Usage: python tools/draft_notebook.py draft.py solutions/NN_topic.ipynb
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from course_utils.colab import setup_cell_source  # noqa: E402

MARKER = re.compile(r"^# %%(?: (?P<kind>\[markdown\]|exercise|check|setup))?(?P<rest>.*)$")


def _nbgrader(grade_id: str, solution: bool, grade: bool, points: int | None = None) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
            "solution": solution, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def build(text: str) -> nbformat.NotebookNode:
    cells, kind, rest, lines = [], None, "", []

    def flush():
        body = "\n".join(lines).strip("\n")
        if kind is None and not body:
            return
        if kind == "[markdown]":
            md = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.split("\n"))
            cells.append(nbformat.v4.new_markdown_cell(md))
        elif kind == "setup":
            cells.append(nbformat.v4.new_code_cell(setup_cell_source()))
        elif kind == "exercise":
            cells.append(nbformat.v4.new_code_cell(body, metadata=_nbgrader(rest.split()[0], True, False)))
        elif kind == "check":
            parts = rest.split()
            points = int(parts[1].split("=")[1]) if len(parts) > 1 else 1
            cells.append(nbformat.v4.new_code_cell(body, metadata=_nbgrader(parts[0], False, True, points)))
        else:
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.split("\n"):
        match = MARKER.match(line)
        if match:
            flush()
            kind, rest, lines = match.group("kind"), match.group("rest").strip(), []
        else:
            lines.append(line)
    flush()
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    source, target = map(Path, sys.argv[1:3])
    nbformat.write(build(source.read_text()), target)
    print(f"wrote {target}")
