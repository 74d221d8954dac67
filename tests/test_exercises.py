"""Tests for course_utils/exercises.py: the exercise format, the generator, drift, stubs failing."""

import copy

import nbformat
import pytest

from course_utils import exercises
from course_utils.authoring.exercise_format import nbgrader_metadata
from course_utils.colab import setup_cell_source

LESSONS = exercises.lesson_paths()


def make_solution():
    cells = [
        nbformat.v4.new_markdown_cell(
            "# Lesson 99 — Test\n\n**Time:** about 5 minutes. **You will:**\n"
            "- double a number,\n  twice;\n- check it.\n\nMore text."
        ),
        nbformat.v4.new_code_cell(setup_cell_source()),
        nbformat.v4.new_code_cell(
            'def double(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n'
            "    y = 2 * x\n    return y\n    ### END SOLUTION",
            metadata=nbgrader_metadata("ex_double", solution=True),
        ),
        nbformat.v4.new_code_cell(
            "assert double(2) == 4\n"
            "### BEGIN HIDDEN TESTS\nassert double(5) == 10\n### END HIDDEN TESTS",
            metadata=nbgrader_metadata("check_double", solution=False),
        ),
    ]
    cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="ok\n")]
    cells[3].execution_count = 3
    return nbformat.v4.new_notebook(
        cells=cells,
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "widgets": {},
        },
    )


def test_generator_replaces_solutions_like_nbgrader_and_drops_hidden_tests():
    solution = make_solution()
    before = copy.deepcopy(solution)
    student = exercises.generate_student(solution)
    assert solution == before, "the solution notebook must not be modified"
    assert student.cells[2].source == (
        'def double(x):\n    """Twice x."""\n    # YOUR CODE HERE\n    raise NotImplementedError()'
    )
    assert student.cells[3].source == "assert double(2) == 4"
    assert student.cells[3].outputs == [] and student.cells[3].execution_count is None
    assert "BEGIN" not in exercises.dumps(student) and "double(5)" not in exercises.dumps(student)
    assert set(student.metadata) == {"kernelspec"}
    assert student.cells[3].metadata["nbgrader"]["grade_id"] == "check_double"


def test_generated_stub_fails_its_check_and_solution_passes():
    solution = make_solution()
    student = exercises.generate_student(solution)
    namespace = {}
    exec(solution.cells[2].source, namespace)
    exec(solution.cells[3].source, namespace)  # passes
    namespace = {}
    exec(student.cells[2].source, namespace)
    with pytest.raises(NotImplementedError):
        exec(student.cells[3].source, namespace)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda nb: nb.cells[2].metadata["nbgrader"].update(grade_id="check_double"), "used twice"),
        (
            lambda nb: setattr(nb.cells[2], "source", "def double(x):\n    return 2 * x"),
            "no '### BEGIN SOLUTION'",
        ),
        (lambda nb: setattr(nb.cells[2], "source", "### BEGIN SOLUTION\nx = 1"), "never closed"),
        (lambda nb: nb.cells.pop(3), "has no check cell"),
        (lambda nb: nb.cells[3].metadata["nbgrader"].update(locked=False), "must be locked"),
        (lambda nb: setattr(nb.cells[1], "source", "import os"), "setup cell"),
        (lambda nb: nb.cells[2].metadata["nbgrader"].update(grade_id="bad id!"), "grade_id"),
    ],
)
def test_format_errors_name_the_problem(breakage, message):
    solution = make_solution()
    breakage(solution)
    with pytest.raises(exercises.FormatError, match=message):
        exercises.generate_student(solution)


def test_course_map_lists_title_time_and_colab_link():
    table = exercises.course_map({exercises.SOLUTIONS / "99_test.ipynb": make_solution()})
    assert "| Lesson 99 — Test | about 5 minutes | [notebooks/99_test.ipynb]" in table
    assert "colab.research.google.com/github/" in table and "notebooks/99_test.ipynb)" in table
    assert (
        "**Lesson 99 — Test** (about 5 minutes). You will:\n- double a number, twice;\n- check it."
        in table
    )
    assert "More text" not in table


def test_every_lesson_states_its_objectives():
    for path in LESSONS:
        objectives = exercises.lesson_objectives(nbformat.read(path, as_version=4))
        assert len(objectives) >= 3, (
            f"{path.name}: the first cell needs '**You will:**' and at least 3 bullets"
        )


def test_committed_generated_files_are_up_to_date():
    """Fails when a solution changed but `make notebooks` was not run (notebooks, README map)."""
    stale = exercises.out_of_date()
    assert stale == [], (
        f"out of date: {[str(p.relative_to(exercises.ROOT)) for p in stale]}; run `make notebooks`"
    )


@pytest.mark.parametrize("solution_path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_is_well_formed(solution_path):
    nb = nbformat.read(solution_path, as_version=4)
    found = exercises.exercises(nb)
    assert found, "a lesson needs at least one exercise"
    title, time = exercises.lesson_summary(nb)
    assert title.startswith("Lesson ") and time != "?", (
        "first markdown cell: '# Lesson NN — …' and '**Time:** …'"
    )
    for cell in nb.cells:
        if cell.cell_type == "code" and not exercises.is_exercise(cell):
            assert exercises.BEGIN_SOLUTION not in cell.source


# A stub raises NotImplementedError; its check raises CheckFailed; cells that use what the learner
# was to build then miss a name (NameError) or an entry a stub never filled in (KeyError). Anything
# else is a bug.
ALLOWED_DOWNSTREAM_ERRORS = {
    "NotImplementedError",
    "NameError",
    "KeyError",
    "CheckFailed",
    "QuizFailed",
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "student_path", [exercises.NOTEBOOKS / p.name for p in LESSONS], ids=[p.stem for p in LESSONS]
)
def test_every_check_fails_on_the_untouched_stubs(student_path):
    """The inverse of running the solutions: execute the student notebook as shipped (like
    `nbgrader validate --invert`); every graded check cell must fail, and nothing else may break
    except through the missing exercise code."""
    from nbclient import NotebookClient

    nb = nbformat.read(student_path, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(student_path.parent)}},
    ).execute()
    passed_checks, unexpected = [], []
    # exercises.exercises() validates a *solution* (it wants BEGIN SOLUTION); here only the
    # positions matter.
    first_exercise = min(i for i, cell in enumerate(nb.cells) if exercises.is_exercise(cell))
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if exercises.is_check(cell) and not errors:
            passed_checks.append(exercises.nbgrader_meta(cell)["grade_id"])
        for error in errors:
            if index < first_exercise or error.ename not in ALLOWED_DOWNSTREAM_ERRORS:
                unexpected.append(f"cell {index}: {error.ename}: {error.evalue}")
    assert passed_checks == [], f"these checks pass on the stubs: {passed_checks}"
    assert unexpected == [], (
        "student notebook fails for reasons other than the stubs:\n" + "\n".join(unexpected)
    )
