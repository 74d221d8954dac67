"""Tests of course_utils/corruption.py and course_utils/checks/corruption.py (lesson 03)."""

import pytest
import torch

from course_utils.checks import CheckFailed
from course_utils.checks import corruption as checks
from course_utils.corruption import corrupted_answer_prob, noised_answer_probs, single_token_effects
from course_utils.predictions import answer_prob

EIFFEL = "The Eiffel Tower is located in the city of"


def test_reference_implementations_pass_their_checks(model):
    checks.check_corrupted_answer_prob(corrupted_answer_prob, model)
    checks.check_noised_answer_probs(noised_answer_probs, model)
    checks.check_single_token_effects(single_token_effects, model)


def test_hidden_variants_pass_on_the_reference(model):
    checks.check_corrupted_answer_prob(corrupted_answer_prob, model, hidden=True)
    checks.check_noised_answer_probs(noised_answer_probs, model, hidden=True)
    checks.check_single_token_effects(single_token_effects, model, hidden=True)


def test_corruption_effects_on_the_eiffel_tower(model):
    clean = answer_prob(model, EIFFEL, " Paris")
    zeroed = corrupted_answer_prob(model, EIFFEL, " Paris", [1, 2, 3, 4])
    assert clean > 0.7 and zeroed < 0.03
    tiny = noised_answer_probs(model, EIFFEL, " Paris", [1, 2, 3, 4], 0.0, n_samples=2)
    assert torch.allclose(tiny, torch.tensor([clean, clean]), atol=1e-5), "zero noise changes nothing"
    assert torch.equal(noised_answer_probs(model, EIFFEL, " Paris", [1, 2, 3, 4], 0.1, 2, seed=3),
                       noised_answer_probs(model, EIFFEL, " Paris", [1, 2, 3, 4], 0.1, 2, seed=3))


def _stub(*args, **kwargs):
    raise NotImplementedError()


def _clean_prob(model, prompt, answer, positions):
    return answer_prob(model, prompt, answer)  # forgot the hook


def _off_by_one(model, prompt, answer, positions):
    return corrupted_answer_prob(model, prompt, answer, [p - 1 for p in positions])  # forgot the BOS


def _returns_tensor_list(model, prompt, answer, positions):
    return [corrupted_answer_prob(model, prompt, answer, positions)]


@pytest.mark.parametrize("wrong,message", [
    (_stub, "not implemented"), (_clean_prob, "clean probability"), (_off_by_one, "expected"),
    (_returns_tensor_list, "expected a float")])
def test_check_corrupted_answer_prob_fails_on_wrong_functions(model, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_corrupted_answer_prob(wrong, model)


def _loop_with_seeds(model, prompt, answer, positions, scale, n_samples, seed=0):
    return torch.cat([noised_answer_probs(model, prompt, answer, positions, scale, 1, seed=seed + i)
                      for i in range(n_samples)])


def _mean_only(model, prompt, answer, positions, scale, n_samples, seed=0):
    return noised_answer_probs(model, prompt, answer, positions, scale, n_samples, seed).mean()


@pytest.mark.parametrize("wrong,message", [
    (_stub, "not implemented"), (_loop_with_seeds, "values differ"), (_mean_only, "wrong shape")])
def test_check_noised_answer_probs_fails_on_wrong_functions(model, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_noised_answer_probs(wrong, model)


def _bos_corrupted_too(model, prompt, answer):
    effects = single_token_effects(model, prompt, answer).clone()
    effects[0] = corrupted_answer_prob(model, prompt, answer, [0])
    return effects


def _without_bos_entry(model, prompt, answer):
    return single_token_effects(model, prompt, answer)[1:]


@pytest.mark.parametrize("wrong,message", [
    (_stub, "not implemented"), (_bos_corrupted_too, "values differ"), (_without_bos_entry, "wrong shape")])
def test_check_single_token_effects_fails_on_wrong_functions(model, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_single_token_effects(wrong, model)
