"""Tests for course_utils/predictions.py."""

import pytest
import torch
from conftest import answer_prob

from course_utils.predictions import answer_token_id, next_token_probs, top_k

EIFFEL = "The Eiffel Tower is located in the city of"


def test_answer_token_id_needs_exactly_one_token(model):
    assert (
        answer_token_id(model, " Paris")
        == model.tokenizer.encode(" Paris", add_special_tokens=False)[0]
    )
    with pytest.raises(ValueError, match="2 tokens"):
        answer_token_id(model, " Stratford")
    with pytest.raises(ValueError, match="non-empty"):
        answer_token_id(model, "")


def test_probabilities_agree_with_each_other(model):
    probs = next_token_probs(model, EIFFEL)
    assert probs.shape == (model.cfg.d_vocab,)
    assert torch.isclose(probs.sum(), torch.tensor(1.0), atol=1e-4)
    top = top_k(model, EIFFEL, 3)
    assert top[0][0] == " Paris" and top[0][1] == pytest.approx(
        answer_prob(model, EIFFEL, " Paris"), abs=1e-6
    )
    assert [p for _, p in top] == sorted([p for _, p in top], reverse=True)
    with pytest.raises(ValueError):
        top_k(model, EIFFEL, 0)


def test_hooks_top_tokens_and_rank_agree(model):
    from course_utils.hooks import make_zero_ablation
    from course_utils.predictions import answer_rank, format_top, top_tokens

    probs = next_token_probs(model, EIFFEL)
    paris = answer_token_id(model, " Paris")
    assert top_tokens(model, probs, 3) == top_k(model, EIFFEL, 3)
    assert format_top(top_tokens(model, probs, 2)).startswith("' Paris' 0.")
    assert int(answer_rank(probs, paris)) == 1 and int(answer_rank(probs.log(), paris)) == 1
    runner_up = answer_token_id(model, top_k(model, EIFFEL, 2)[1][0])
    assert int(answer_rank(probs, runner_up)) == 2
    assert answer_rank(torch.stack([probs, probs]), paris).tolist() == [1, 1]
    with model.hooks(fwd_hooks=[("hook_embed", make_zero_ablation([1, 2, 3, 4]))]):
        zeroed = next_token_probs(model, EIFFEL)
    assert zeroed.shape == (model.cfg.d_vocab,) and zeroed[paris] < 0.1 < probs[paris]
    with pytest.raises(ValueError, match="one distribution"):
        top_tokens(model, torch.stack([zeroed, probs]), 3)
