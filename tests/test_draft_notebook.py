"""tools/draft_notebook.py: a percent-format draft becomes a solution notebook (exercise format)."""

import importlib.util

import pytest

from course_utils import exercises, paths
from course_utils.colab import setup_cell_source

spec = importlib.util.spec_from_file_location(
    "draft_notebook", paths.ROOT / "tools" / "draft_notebook.py"
)
draft_notebook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(draft_notebook)

DRAFT = """# %% [markdown]
# # Lesson 97 — Draft
#
# **Time:** about 2 minutes.

# %% setup

# %%
x = 1

# %% exercise ex97_double
def double(x):
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION

# %% check check97_double points=2
assert double(2) == 4

# %% check check97_again
assert double(3) == 6
"""


def test_draft_becomes_a_valid_solution_notebook():
    nb = draft_notebook.build(DRAFT)
    kinds = [cell.cell_type for cell in nb.cells]
    assert kinds == ["markdown", "code", "code", "code", "code", "code"]
    assert nb.cells[0].source == "# Lesson 97 — Draft\n\n**Time:** about 2 minutes."
    assert nb.cells[1].source == setup_cell_source()
    assert nb.cells[2].source == "x = 1" and "nbgrader" not in nb.cells[2].metadata
    assert nb.cells[3].source.startswith("def double(x):\n    ### BEGIN SOLUTION")
    assert exercises.nbgrader_meta(nb.cells[3])["solution"] is True
    assert [exercises.nbgrader_meta(c).get("points") for c in nb.cells[4:]] == [2, 1]
    assert set(nb.cells[4].metadata) == {"nbgrader"}, "jupytext's own metadata is not copied"
    found = exercises.exercises(nb)
    assert [(e.grade_id, e.check_ids) for e in found] == [
        ("ex97_double", ["check97_double", "check97_again"])
    ]
    assert "raise NotImplementedError()" in exercises.generate_student(nb).cells[3].source


@pytest.mark.parametrize(
    "marker, message",
    [
        ("# %% exercise", "exactly one GRADE_ID"),
        ("# %% solution ex97_x", "unknown cell marker"),
    ],
)
def test_bad_markers_are_named(marker, message):
    with pytest.raises(ValueError, match=message):
        draft_notebook.build(f"{marker}\nx = 1\n")
