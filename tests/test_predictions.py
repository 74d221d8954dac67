"""Tests for course_utils/predictions.py."""

import pytest
import torch

from course_utils.predictions import answer_prob, answer_token_id, next_token_probs, top_predictions

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
    assert probs.shape == (1, model.cfg.d_vocab)
    assert torch.isclose(probs.sum(), torch.tensor(1.0), atol=1e-4)
    top = top_predictions(model, EIFFEL, 3)
    assert top[0][0] == " Paris" and top[0][1] == pytest.approx(
        answer_prob(model, EIFFEL, " Paris"), abs=1e-6
    )
    assert [p for _, p in top] == sorted([p for _, p in top], reverse=True)
    with pytest.raises(ValueError):
        top_predictions(model, EIFFEL, 0)
