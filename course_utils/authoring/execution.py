"""Re-running a solution notebook top to bottom, saving its outputs (``make solutions``)."""

from __future__ import annotations

from pathlib import Path

import nbformat

from .exercise_format import dumps, with_current_setup_cell


def execute(path: Path, timeout: int = 900) -> None:
    """Run a solution notebook in a fresh kernel and save it with its outputs."""
    from nbclient import NotebookClient

    nb = with_current_setup_cell(nbformat.read(path, as_version=4))
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources=resources).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    path.write_text(dumps(nb))
