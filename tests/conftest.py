"""Shared fixtures: one model for the whole test session (loading takes ~2 s warm, ~20 s cold), the
learner's functions from a solution notebook; and ``stub`` and ``answer_prob``, which tests import
(``from conftest import stub``: pytest puts this folder on ``sys.path``)."""

import pytest


def stub(*args, **kwargs):
    """An exercise function as the student notebook hands it out (``raise NotImplementedError()``):
    every check must fail on it, saying it is not implemented yet."""
    raise NotImplementedError()


def answer_prob(model, prompt: str, answer: str) -> float:
    """p(answer | prompt) at the last position: the tests' truth for a single probability."""
    from course_utils.predictions import answer_token_id, next_token_probs

    return float(next_token_probs(model, prompt)[answer_token_id(model, answer)])


def assert_lookup_fails_when_grading(check, lookup, *args, seeds=(1, 2)) -> None:
    """A table of answers for the inputs written in ``check`` passes its hidden test in a notebook
    (no grading seed) and fails it under each grading seed, which draws the inputs afresh."""
    from course_utils.checks import CheckFailed, grading_seed

    check(lookup, *args, hidden=True)
    for seed in seeds:
        with grading_seed(seed), pytest.raises(CheckFailed):
            check(lookup, *args, hidden=True)


@pytest.fixture(scope="session")
def model():
    from course_utils import load_model

    return load_model(device="cpu")


@pytest.fixture(scope="session")
def solution_functions():
    """Load the code a learner writes from its one source, the lesson's solution notebook.

    ``solution_functions("02_hooks", {"torch": torch})`` runs every exercise cell of
    ``solutions/02_hooks.ipynb`` (solutions included) in a copy of the given namespace, which must
    hold what those cells use from the notebook's imports, and returns that namespace.
    """
    import nbformat

    from course_utils.exercises import SOLUTIONS, is_exercise, nbgrader_meta

    def load(lesson: str, namespace: dict) -> dict:
        nb = nbformat.read(SOLUTIONS / f"{lesson}.ipynb", as_version=4)
        defined = dict(namespace)
        for cell in nb.cells:
            if is_exercise(cell):
                where = f"solutions/{lesson}.ipynb:{nbgrader_meta(cell)['grade_id']}"
                exec(compile(cell.source, where, "exec"), defined)
        return defined

    return load
