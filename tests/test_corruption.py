"""Tests of lesson 03's exercises and of course_utils/checks/corruption.py.

The reference implementations are the solution notebook's exercise cells (their one source; no later
lesson imports them, so the package keeps no copy): the ``lesson03`` fixture loads them from there.
"""

import pytest
import torch
from conftest import answer_prob, assert_lookup_fails_when_grading, stub

from course_utils.checks import CheckFailed, grading_seed
from course_utils.checks import corruption as checks
from course_utils.hooks import make_noise_hook, make_zero_ablation
from course_utils.predictions import answer_token_id

EIFFEL = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def lesson03(solution_functions):
    """The three functions lesson 03's learner writes, from
    solutions/03_corruption_quizzes.ipynb."""
    return solution_functions(
        "03_corruption_quizzes",
        {
            "torch": torch,
            "make_zero_ablation": make_zero_ablation,
            "make_noise_hook": make_noise_hook,
            "answer_token_id": answer_token_id,
        },
    )


@pytest.fixture(scope="module", autouse=True)
def _reference(lesson03):
    """Module-level names for the helpers below (they build typical mistakes on the reference)."""
    global corrupted_answer_prob, noised_answer_probs, single_token_effects
    corrupted_answer_prob = lesson03["corrupted_answer_prob"]
    noised_answer_probs = lesson03["noised_answer_probs"]
    single_token_effects = lesson03["single_token_effects"]
    with torch.no_grad():  # as in the lesson, which sets torch.set_grad_enabled(False)
        yield


def test_reference_implementations_pass_their_checks(model):
    checks.check_corrupted_answer_prob(corrupted_answer_prob, model)
    checks.check_noised_answer_probs(noised_answer_probs, model)
    checks.check_single_token_effects(single_token_effects, model)


def test_hidden_variants_pass_on_the_reference(model):
    checks.check_corrupted_answer_prob(corrupted_answer_prob, model, hidden=True)
    checks.check_noised_answer_probs(noised_answer_probs, model, hidden=True)
    checks.check_single_token_effects(single_token_effects, model, hidden=True)


def test_hidden_variants_pass_on_the_reference_under_grading_seeds(model):
    for seed in (1, 2):  # drawn facts, positions, noise scale, sample count and seed
        with grading_seed(seed):
            test_hidden_variants_pass_on_the_reference(model)


def test_a_lookup_table_of_the_written_inputs_fails_the_hidden_check_at_grading(model):
    """The reference's answers for every case written in the check, looked up by prompt and
    positions: enough in a notebook, not while grading."""
    written = [
        (*checks.EIFFEL, [1, 2, 3, 4]),
        (*checks.JAPAN, [4]),
        (*checks.COLOSSEUM, [1, 2, 3, 4]),
        (*checks.COLOSSEUM, [9]),
    ]
    table = {(p, a, tuple(pos)): corrupted_answer_prob(model, p, a, pos) for p, a, pos in written}

    def lookup(model, prompt, answer, positions):
        return table.get((prompt, answer, tuple(positions)), 0.5)

    assert_lookup_fails_when_grading(checks.check_corrupted_answer_prob, lookup, model)


def test_corruption_effects_on_the_eiffel_tower(model):
    clean = answer_prob(model, EIFFEL, " Paris")
    zeroed = corrupted_answer_prob(model, EIFFEL, " Paris", [1, 2, 3, 4])
    assert clean > 0.7 and zeroed < 0.03
    tiny = noised_answer_probs(model, EIFFEL, " Paris", [1, 2, 3, 4], 0.0, n_samples=2)
    assert torch.allclose(tiny, torch.tensor([clean, clean]), atol=1e-5), (
        "zero noise changes nothing"
    )
    assert torch.equal(
        noised_answer_probs(model, EIFFEL, " Paris", [1, 2, 3, 4], 0.1, 2, seed=3),
        noised_answer_probs(model, EIFFEL, " Paris", [1, 2, 3, 4], 0.1, 2, seed=3),
    )


def _clean_prob(model, prompt, answer, positions):
    return answer_prob(model, prompt, answer)  # forgot the hook


def _off_by_one(model, prompt, answer, positions):
    return corrupted_answer_prob(
        model, prompt, answer, [p - 1 for p in positions]
    )  # forgot the BOS


def _returns_tensor_list(model, prompt, answer, positions):
    return [corrupted_answer_prob(model, prompt, answer, positions)]


@pytest.mark.parametrize(
    "wrong,message",
    [
        (stub, "not implemented"),
        (_clean_prob, "clean probability"),
        (_off_by_one, "expected"),
        (_returns_tensor_list, "expected a float"),
    ],
)
def test_check_corrupted_answer_prob_fails_on_wrong_functions(model, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_corrupted_answer_prob(wrong, model)


def _loop_with_seeds(model, prompt, answer, positions, scale, n_samples, seed=0):
    return torch.cat(
        [
            noised_answer_probs(model, prompt, answer, positions, scale, 1, seed=seed + i)
            for i in range(n_samples)
        ]
    )


def _mean_only(model, prompt, answer, positions, scale, n_samples, seed=0):
    return noised_answer_probs(model, prompt, answer, positions, scale, n_samples, seed).mean()


@pytest.mark.parametrize(
    "wrong,message",
    [(stub, "not implemented"), (_loop_with_seeds, "values differ"), (_mean_only, "wrong shape")],
)
def test_check_noised_answer_probs_fails_on_wrong_functions(model, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_noised_answer_probs(wrong, model)


def _bos_corrupted_too(model, prompt, answer):
    effects = single_token_effects(model, prompt, answer).clone()
    effects[0] = corrupted_answer_prob(model, prompt, answer, [0])
    return effects


def _without_bos_entry(model, prompt, answer):
    return single_token_effects(model, prompt, answer)[1:]


@pytest.mark.parametrize(
    "wrong,message",
    [
        (stub, "not implemented"),
        (_bos_corrupted_too, "values differ"),
        (_without_bos_entry, "wrong shape"),
    ],
)
def test_check_single_token_effects_fails_on_wrong_functions(model, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_single_token_effects(wrong, model)
