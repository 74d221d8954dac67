"""ruff (pinned in requirements-dev.txt, configured in pyproject.toml) finds nothing: lint and
format, over the package, tests, scripts, benchmarks, tools and the solution notebooks' cells."""

import subprocess
import sys

import pytest

from course_utils.colab import setup_cell_source
from course_utils.paths import ROOT


def ruff(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args], cwd=ROOT, input=stdin, capture_output=True, text=True
    )


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command):
    done = ruff(*command, "--no-cache", ".")
    assert done.returncode == 0, f"`ruff {' '.join(command)}` (fix: `make format`):\n{done.stdout}"


def test_setup_cell_is_ruff_clean_so_formatting_a_notebook_keeps_it_current():
    """The generator writes setup_cell_source() into every notebook; if ruff reformatted it, the
    drift check and the formatter would undo each other."""
    source = setup_cell_source() + "\n"
    formatted = ruff("format", "--stdin-filename", "setup.py", "-", stdin=source)
    assert formatted.returncode == 0 and formatted.stdout == source
    checked = ruff("check", "--stdin-filename", "setup.py", "-", stdin=source)
    assert checked.returncode == 0, checked.stdout
