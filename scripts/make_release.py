"""Build the student-facing bundle of the course: ``python scripts/make_release.py [--out dist]``.

Writes ``dist/residual-stream-lab/`` and ``dist/residual-stream-lab.tar.gz``: the student notebooks,
the course package and what installs it, and nothing an instructor keeps back: no ``solutions/``
(answers, hidden tests, plain quiz specs), no ``tests/`` (their fixtures hold answers), no grader
(``course_utils/grading``, ``course_utils/grade.py``) and no authoring tools
(``course_utils/exercises.py``, ``course_utils/authoring/``, ``docs/``, ``scripts/``,
``tools/``). The sealed quiz banks (``course_utils/data/quizzes``) stay: a learner needs them, and
they reveal whether an answer is right only when it is given.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "residual-stream-lab"
TOP_FILES = [
    "README.md",
    "Makefile",
    "pyproject.toml",
    "requirements.txt",
    "requirements-dev.txt",
    "requirements-model.txt",
    ".gitignore",
]
FOLDERS = ["notebooks", "course_utils"]
LEFT_OUT = [
    "course_utils/grading",
    "course_utils/grade.py",
    "course_utils/exercises.py",
    "course_utils/authoring",
]
SKIP_NAMES = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}


def _ignore(folder: str, names: list[str]) -> set[str]:
    relative = Path(folder).resolve().relative_to(ROOT)
    return {
        n for n in names if n in SKIP_NAMES or n.endswith(".pyc") or str(relative / n) in LEFT_OUT
    }


def build(out: Path) -> Path:
    """Build the bundle folder and its .tar.gz under ``out``; return the folder."""
    out = Path(out).resolve()
    target = out / NAME
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in TOP_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, target / folder, ignore=_ignore, symlinks=False)
    with tarfile.open(out / f"{NAME}.tar.gz", "w:gz") as tar:
        tar.add(target, arcname=NAME)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args(argv)
    folder = build(args.out)
    files = sum(1 for p in folder.rglob("*") if p.is_file())
    print(f"student bundle: {folder} ({files} files) and {folder}.tar.gz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
