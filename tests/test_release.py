"""The student bundle (``make release``, scripts/make_release.py): no answers, no hidden tests, no
plain quiz specs, no grader; its notebooks still import their course modules from the bundle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from course_utils.exercises import ROOT, SOLUTIONS

sys.path.insert(0, str(ROOT / "scripts"))
import make_release  # noqa: E402

FORBIDDEN_TEXT = ["### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS", "hidden=True"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_release.build(tmp_path_factory.mktemp("dist"))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_bundle_has_no_solutions_tests_or_grader(bundle):
    names = {str(p.relative_to(bundle)) for p in _files(bundle)}
    assert not any(
        n.startswith(("solutions/", "tests/", "scripts/", "docs/", "tools/", ".git/"))
        for n in names
    )
    assert not any(n.startswith("course_utils/grading/") for n in names)
    assert {
        "notebooks/00_first_look.ipynb",
        "course_utils/checks/__init__.py",
        "README.md",
    } <= names


def test_bundle_has_no_answer_or_hidden_test_text(bundle):
    for path in _files(bundle):
        if path.suffix not in (".py", ".ipynb", ".json"):
            continue  # the README describes the exercise format in prose; it holds no cell
        text = path.read_bytes().decode("utf-8", "replace")
        for marker in FORBIDDEN_TEXT:
            assert marker not in text, (path, marker)

    # no solution cell's code either (each answer as a whole, markers removed, indentation ignored)
    def normal(text: str) -> str:
        return "\n".join(line.strip() for line in text.splitlines() if line.strip())

    answers = []
    for solution in SOLUTIONS.glob("[0-9][0-9]_*.ipynb"):
        for cell in json.loads(solution.read_text())["cells"]:
            source = "".join(cell["source"])
            if "### BEGIN SOLUTION" in source:
                body = source.split("### BEGIN SOLUTION", 1)[1].split("### END SOLUTION", 1)[0]
                if len(normal(body).splitlines()) >= 3:
                    answers.append(normal(body))
    assert answers
    # the notebooks only: a course module may hold a helper later lessons use (course_utils.hooks
    # has its own temporary_hooks), which the threat model lists as not defended
    everything = "\n".join(normal(p.read_text()) for p in _files(bundle / "notebooks"))
    leaked = [a for a in answers if a in everything]
    assert not leaked, leaked


def test_quiz_banks_stay_sealed_and_plain_specs_stay_out(bundle):
    specs = {p.read_bytes() for p in (SOLUTIONS / "quizzes").glob("*.json")}
    assert specs, "the course has plain quiz specs to keep out"
    assert not any(p.read_bytes() in specs for p in _files(bundle))
    banks = sorted((ROOT / "course_utils" / "data" / "quizzes").glob("*.json"))
    for bank in banks:
        assert (
            bundle / "course_utils" / "data" / "quizzes" / bank.name
        ).read_bytes() == bank.read_bytes()


def test_tarball_matches_the_folder(bundle):
    with tarfile.open(bundle.parent / f"{bundle.name}.tar.gz") as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    assert members == {str(p.relative_to(bundle)) for p in _files(bundle)}


def test_bundle_notebooks_import_from_the_bundle(bundle):
    """Every top-level import of every student notebook, and every course module, runs in a fresh
    Python whose only copy of the course is the bundle."""
    imports = []
    for notebook in sorted((bundle / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            try:
                tree = ast.parse(source)
            except SyntaxError:  # IPython magics: not Python, and not imports
                continue
            imports.extend(
                ast.unparse(node)
                for node in tree.body
                if isinstance(node, (ast.Import, ast.ImportFrom))
            )
    modules = sorted(
        f"course_utils.{p.stem}"
        for p in (bundle / "course_utils").glob("*.py")
        if p.stem != "__init__"
    )
    modules += sorted(
        f"course_utils.checks.{p.stem}"
        for p in (bundle / "course_utils" / "checks").glob("*.py")
        if p.stem != "__init__"
    )
    code = (
        "\n".join(sorted(set(imports)))
        + "\nimport importlib\n"
        + "".join(f"importlib.import_module({m!r})\n" for m in modules)
        + "import course_utils\nprint(course_utils.__file__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(bundle), "HOME": str(bundle)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith(str(bundle / "course_utils" / "__init__.py"))
