"""Where the grader runs each trusted check in a submission's kernel (course_utils.grading.lesson):
at the student's check cell, as nbgrader does; forgiving and noted when a check cell was deleted,
edited or duplicated. No kernel is started here."""

from __future__ import annotations

import copy

import nbformat
import pytest

from course_utils.exercises import NOTEBOOKS
from course_utils.grading.lesson import grade_id_of, kernel_plan, load_lesson

LESSON = "00_first_look"
EX1, CHECK1, EX2, CHECK2 = (
    "ex00_next_token_probs",
    "check00_next_token_probs",
    "ex00_top_k",
    "check00_top_k",
)


@pytest.fixture(scope="module")
def lesson():
    return load_lesson(LESSON)


@pytest.fixture()
def student():
    return copy.deepcopy(nbformat.read(NOTEBOOKS / f"{LESSON}.ipynb", as_version=4))


def _index(nb, grade_id):
    return next(i for i, c in enumerate(nb.cells) if grade_id_of(c) == grade_id)


def _order(plan):
    """The plan as a list of markers: check grade ids and the student's own cells' first lines."""
    return [
        c.grade_id if c.kind == "check" else c.source.splitlines()[0] if c.source else ""
        for c in plan
        if c.kind in ("check", "student")
    ]


def test_check_runs_where_the_student_check_cell_is(lesson, student):
    """The answer pasted below the stub, a scratch copy above it, a helper in a new cell: all run
    before the trusted check, because it takes the place of the student's check cell."""
    student.cells.insert(
        _index(student, EX1),
        nbformat.v4.new_code_cell("# scratch copy\ndef next_token_probs(m, p):\n    pass"),
    )
    student.cells.insert(
        _index(student, EX1) + 1,
        nbformat.v4.new_code_cell("# my answer\ndef next_token_probs(m, p): ..."),
    )
    student.cells.insert(
        _index(student, CHECK2), nbformat.v4.new_code_cell("# helper\ndef _decode(m, i): ...")
    )
    plan, notes = kernel_plan(student, lesson)
    order = _order(plan)
    assert (
        order.index("# my answer")
        < order.index(CHECK1)
        < order.index("# helper")
        < order.index(CHECK2)
    )
    assert order.index("# scratch copy") < order.index("# my answer")
    assert notes == []  # nothing was moved or restored


def test_a_moved_check_cell_runs_at_its_new_place(lesson, student):
    cell = student.cells.pop(_index(student, CHECK1))
    student.cells.insert(_index(student, EX2) + 1, cell)  # after the second exercise
    student.cells.insert(_index(student, CHECK1), nbformat.v4.new_code_cell("# late answer"))
    order = _order(kernel_plan(student, lesson)[0])
    assert order.index("# late answer") < order.index(CHECK1)


def test_a_deleted_check_runs_before_the_next_check_and_is_noted(lesson, student):
    student.cells.pop(_index(student, CHECK1))
    student.cells.insert(
        _index(student, EX2), nbformat.v4.new_code_cell("# answer 1, written late")
    )
    plan, notes = kernel_plan(student, lesson)
    order = _order(plan)
    assert order.index("# answer 1, written late") < order.index(CHECK1) < order.index(CHECK2)
    assert order.index(CHECK1) == order.index(CHECK2) - 1  # right before the next graded cell
    assert notes == [f"check cell {CHECK1} was deleted: the trusted check ran before {CHECK2}"]


def test_all_checks_deleted_run_at_the_end(lesson, student):
    student.cells = [c for c in student.cells if grade_id_of(c) not in (CHECK1, CHECK2)]
    student.cells.append(nbformat.v4.new_code_cell("# my last cell"))
    plan, notes = kernel_plan(student, lesson)
    order = _order(plan)
    assert order[-3:] == ["# my last cell", CHECK1, CHECK2]
    assert [n.endswith("ran at the end") for n in notes] == [True, True]


def test_edited_and_duplicated_check_cells_are_restored_and_noted(lesson, student):
    student.cells[_index(student, CHECK1)].source = 'print("✅ passed")'
    duplicate = copy.deepcopy(student.cells[_index(student, CHECK2)])
    student.cells.append(duplicate)
    plan, notes = kernel_plan(student, lesson)
    checks = [c for c in plan if c.kind == "check"]
    assert [c.grade_id for c in checks] == [CHECK1, CHECK2]
    assert all(
        c.source == lesson.cell(c.grade_id).source for c in checks
    )  # trusted, hidden tests included
    assert f"check cell {CHECK1} had been edited: the original check ran in its place" in notes
    assert f"check cell {CHECK2} appeared twice: it ran once, at its first copy" in notes
