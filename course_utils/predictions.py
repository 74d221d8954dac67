"""Next-token predictions (lesson 00): answer token ids, probabilities and top-k lists.

Every lesson measures "how much does the model believe the answer": p(answer | prompt) at the last
position. These helpers enforce the course's prompt convention (the model's BOS, ``<|endoftext|>``
for the embedded model, is prepended by ``model.to_tokens``) and that an answer is exactly one
token.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def answer_token_id(model, answer: str) -> int:
    """Token id of ``answer``, which must be one token (mind the leading space: ``" Paris"``)."""
    if not isinstance(answer, str) or not answer:
        raise ValueError(f"answer must be a non-empty string, got {answer!r}")
    ids = model.tokenizer.encode(answer, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [model.tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"answer {answer!r} is {len(ids)} tokens {pieces}, not one. Use its first token "
            f"({pieces[0]!r}) or pick an answer that is a single token; most need a leading space."
        )
    return ids[0]


@torch.no_grad()
def next_token_probs(
    model, prompt: str | Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch d_vocab"]:
    """Probability of every vocabulary token at the last position of each prompt."""
    tokens = model.to_tokens(prompt) if isinstance(prompt, str) else prompt
    return model(tokens)[:, -1].float().softmax(dim=-1)


def answer_prob(model, prompt: str, answer: str) -> float:
    """p(answer | prompt) at the last position."""
    return float(next_token_probs(model, prompt)[0, answer_token_id(model, answer)])


def top_predictions(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely next tokens as ``(token string, probability)``, most likely first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    probs = next_token_probs(model, prompt)[0]
    values, indices = probs.topk(k)
    return [
        (model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True)
    ]
