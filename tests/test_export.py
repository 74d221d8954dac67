"""Tests for course_utils/authoring/export.py: solution cells marked `#| export MODULE` become
the generated module course_utils/from_solutions/MODULE.py; the drift check notices a stale one.

Fixture notebooks only: the real lessons are marked by `python -m course_utils.exercises mark`."""

import importlib.util

import nbformat
import pytest

from course_utils import exercises, paths
from course_utils.authoring import export, generated
from course_utils.authoring.exercise_format import nbgrader_metadata
from course_utils.colab import setup_cell_source
from course_utils.exercises import FormatError


def exercise(grade_id, source):
    return nbformat.v4.new_code_cell(source, metadata=nbgrader_metadata(grade_id, solution=True))


def check(grade_id, source):
    return nbformat.v4.new_code_cell(source, metadata=nbgrader_metadata(grade_id, solution=False))


SCALE = '''def scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x: Float[Tensor, "batch d"] -> x * factor."""
    ### BEGIN SOLUTION
    return x * factor
    ### END SOLUTION'''

SCALE_ALL = '''@contextmanager
def scale_all(xs, factor):
    """Yield [scale(x, factor) for x in xs]."""
    ### BEGIN SOLUTION
    yield [scale(x, factor) for x in xs]
    ### END SOLUTION'''


def make_solution():
    return nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Lesson 98 — Export\n\n**Time:** about 1 minute."),
            nbformat.v4.new_code_cell(setup_cell_source()),
            nbformat.v4.new_code_cell(
                "import torch\nfrom contextlib import contextmanager\n"
                "from contextlib import nullcontext\n\nHELPER = 3"
            ),
            exercise("ex98_scale", SCALE),
            check("check98_scale", "assert scale(torch.ones(1), 2.0).item() == 2.0"),
            exercise("ex98_scale_all", SCALE_ALL),
            check(
                "check98_scale_all",
                "with scale_all([torch.ones(1)], 3.0) as out:\n    assert out[0].item() == 3.0",
            ),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )


def marked_solution():
    nb = make_solution()
    assert export.mark(nb, ["scale", "ex98_scale_all"], "scaling") == [3, 5]
    return nb


def test_mark_adds_the_marker_once_by_function_name_or_grade_id():
    nb = marked_solution()
    assert nb.cells[3].source == "#| export scaling\n" + SCALE
    assert nb.cells[5].source == "#| export scaling\n" + SCALE_ALL
    assert export.mark(nb, ["scale", "scale_all"], "scaling") == [], "marking twice changes nothing"
    assert nb.cells[3].source.count("#| export") == 1


@pytest.mark.parametrize(
    "names, module, message",
    [
        (["missing"], "scaling", "0 code cells"),
        (["check98_scale"], "scaling", "0 code cells"),  # a check cell is never exported
        (["scale"], "not-a-name", "not a module name"),
    ],
)
def test_mark_refuses_what_it_cannot_mark(names, module, message):
    with pytest.raises(FormatError, match=message):
        export.mark(make_solution(), names, module)


def test_mark_refuses_a_cell_exported_elsewhere():
    nb = marked_solution()
    with pytest.raises(FormatError, match="already exported to 'scaling'"):
        export.mark(nb, ["scale"], "other")


def test_generated_module_is_the_full_solution_with_the_imports_it_needs():
    text = export.exported_modules({paths.SOLUTIONS / "98_export.ipynb": marked_solution()})[
        "scaling"
    ]
    assert text.startswith(
        '"""GENERATED from solutions/98_export.ipynb by `make notebooks` — do not edit.'
    )
    code = text.split('"""', 2)[2]  # after the header, which names the marker
    assert "### BEGIN" not in code and "### END" not in code and "#| export" not in code
    assert "    return x * factor\n" in text and "yield [scale(x, factor) for x in xs]" in text
    # imports in notebook order, merged per module; unused ones (nullcontext) and HELPER left out
    assert "\nimport torch\nfrom contextlib import contextmanager\n" in text
    assert "nullcontext" not in text and "HELPER" not in text
    assert '__all__ = ["scale"]' not in text and '__all__ = ["scale", "scale_all"]' in text
    assert "# solutions/98_export.ipynb, cell 3 (ex98_scale)\ndef scale(" in text


def test_generated_module_runs_like_the_solution(tmp_path):
    text = export.exported_modules({tmp_path / "98_export.ipynb": marked_solution()})["scaling"]
    (tmp_path / "scaling.py").write_text(text)
    spec = importlib.util.spec_from_file_location("scaling", tmp_path / "scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch = pytest.importorskip("torch")
    assert module.scale(torch.tensor([1.5]), 2.0).item() == 3.0
    with module.scale_all([torch.tensor([1.0]), torch.tensor([2.0])], 3.0) as out:
        assert [o.item() for o in out] == [3.0, 6.0]


def test_student_notebook_has_no_marker_and_still_the_stub():
    student = exercises.generate_student(marked_solution())
    assert student.cells[3].source.startswith("def scale(")
    assert "#| export" not in exercises.dumps(student)
    assert "raise NotImplementedError()" in student.cells[3].source


def test_a_cell_in_another_module_is_imported_from_its_generated_module():
    nb = make_solution()
    export.mark(nb, ["scale"], "scaling")
    export.mark(nb, ["scale_all"], "contexts")
    texts = export.exported_modules({paths.SOLUTIONS / "98_export.ipynb": nb})
    assert "from course_utils.from_solutions.scaling import scale\n" in texts["contexts"]
    assert "import torch" not in texts["contexts"]


@pytest.mark.parametrize(
    "breakage, message",
    [
        # scale_all needs scale, which is defined in a cell that is not exported
        (lambda nb: export.mark(nb, ["scale_all"], "scaling"), "uses `scale`, defined in cell 3"),
        (
            lambda nb: setattr(nb.cells[3], "source", "#| export scaling\ny = undefined_name"),
            "uses `undefined_name`, which no earlier cell",
        ),
        (lambda nb: setattr(nb.cells[3], "source", SCALE + "\n#| export scaling"), "first line"),
        (lambda nb: setattr(nb.cells[3], "source", "#| export scaling things\n" + SCALE), "MODULE"),
        (lambda nb: setattr(nb.cells[4], "source", "#| export scaling\nassert True"), "check cell"),
    ],
)
def test_export_errors_name_the_cell_and_the_problem(breakage, message):
    nb = make_solution()
    breakage(nb)
    with pytest.raises(FormatError, match=message):
        export.exported_modules({paths.SOLUTIONS / "98_export.ipynb": nb})


def test_one_module_comes_from_one_notebook():
    with pytest.raises(FormatError, match="already exported from solutions/98_a.ipynb"):
        export.exported_modules(
            {
                paths.SOLUTIONS / "98_a.ipynb": marked_solution(),
                paths.SOLUTIONS / "98_b.ipynb": marked_solution(),
            }
        )


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A course checkout in tmp_path with one marked solution notebook and its generated files."""
    for name, value in [
        ("ROOT", tmp_path),
        ("SOLUTIONS", tmp_path / "solutions"),
        ("NOTEBOOKS", tmp_path / "notebooks"),
        ("README", tmp_path / "README.md"),
        ("FROM_SOLUTIONS", tmp_path / "course_utils" / "from_solutions"),
    ]:
        monkeypatch.setattr(paths, name, value)
    paths.SOLUTIONS.mkdir()
    paths.FROM_SOLUTIONS.mkdir(parents=True)
    solution = paths.SOLUTIONS / "98_export.ipynb"
    solution.write_text(exercises.dumps(marked_solution()))
    generated.write()
    return solution


def test_drift_check_fails_when_the_generated_module_is_stale(course):
    module = paths.FROM_SOLUTIONS / "scaling.py"
    assert module.exists() and (paths.FROM_SOLUTIONS / "__init__.py").exists()
    assert generated.out_of_date() == []
    nb = nbformat.read(course, as_version=4)
    nb.cells[3].source = nb.cells[3].source.replace("return x * factor", "return factor * x")
    course.write_text(exercises.dumps(nb))
    assert generated.out_of_date() == [module]
    module.write_text(module.read_text() + "\n# edited by hand\n")
    generated.write()
    assert "factor * x" in module.read_text() and "by hand" not in module.read_text()
    assert generated.out_of_date() == []


def test_a_module_nobody_exports_any_more_is_stale_and_generate_deletes_it(course):
    nb = nbformat.read(course, as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace("#| export scaling\n", "")
    course.write_text(exercises.dumps(nb))
    module = paths.FROM_SOLUTIONS / "scaling.py"
    assert generated.out_of_date() == [module]
    (paths.FROM_SOLUTIONS / "helpers.py").write_text('"""Written by hand."""\n')
    generated.write()
    assert not module.exists() and (paths.FROM_SOLUTIONS / "helpers.py").exists()
    assert generated.out_of_date() == []


def test_a_hand_kept_second_copy_fails_the_check(course, capsys):
    package = paths.ROOT / "course_utils"
    (package / "scaling.py").write_text(
        "from .from_solutions.scaling import scale_all\n\n\n"
        "def scale(x, factor):\n    return x * factor\n"
    )
    assert generated.duplicated_exports() == [
        "course_utils/scaling.py: scale (exported to course_utils.from_solutions.scaling)"
    ]
    assert exercises.main(["check"]) == 1
    assert "second copy of exported code: course_utils/scaling.py: scale" in capsys.readouterr().out
    (package / "scaling.py").write_text("from .from_solutions.scaling import scale, scale_all\n")
    assert exercises.main(["check"]) == 0


def test_mark_command_edits_the_notebook_file_idempotently(tmp_path, capsys):
    path = tmp_path / "98_export.ipynb"
    path.write_text(exercises.dumps(make_solution()))
    argv = ["mark", str(path), "scale", "scale_all", "--module", "scaling"]
    assert exercises.main(argv) == 0
    first = path.read_text()
    assert nbformat.read(path, as_version=4).cells[3].source.startswith("#| export scaling\n")
    assert exercises.main(argv) == 0
    assert path.read_text() == first
    assert "already marked" in capsys.readouterr().out
