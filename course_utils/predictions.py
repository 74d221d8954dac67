"""Next-token predictions (lesson 00): answer token ids, probabilities and top-k lists.

Every lesson measures "how much does the model believe the answer": p(answer | prompt) at the last
position. ``next_token_probs(model, prompt)`` (the distribution, ``[d_vocab]``) and
``top_k(model, prompt, k)`` are lesson 00's exercises: their only text is the lesson's solution
cells (marked ``#| export predictions``), imported here from the generated
``course_utils.from_solutions.predictions``; attach hooks around them with ``model.hooks(...)``
(lesson 02). These helpers enforce the course's prompt convention (the model's BOS,
``<|endoftext|>`` for the embedded model, is prepended by ``model.to_tokens``) and that an answer
is exactly one token.

Ranks are 1-based throughout the course: rank 1 is the model's top prediction (``answer_rank``), as
in ``course_utils/data/facts.json``, where a fact is *known* when its answer has rank 1.
"""

from __future__ import annotations

from jaxtyping import Float, Int
from torch import Tensor

from .from_solutions.predictions import next_token_probs, top_k

__all__ = [
    "answer_rank",
    "answer_token_id",
    "format_top",
    "next_token_probs",
    "top_k",
    "top_tokens",
]


def answer_token_id(model, answer: str) -> int:
    """Token id of ``answer``, which must be a single token (mind the leading space:
    ``" Paris"``; the caller adds it, as in ``answer_token_id(model, " " + y)``).

    ``model`` is anything with a ``.tokenizer`` (the TransformerLens bridge, an nnsight model,
    lesson 07) or a tokenizer itself.
    """
    if not isinstance(answer, str) or not answer:
        raise ValueError(f"answer must be a non-empty string, got {answer!r}")
    tokenizer = getattr(model, "tokenizer", model)
    ids = tokenizer.encode(answer, add_special_tokens=False)
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ValueError(
            f"answer {answer!r} is {len(ids)} tokens {pieces}, not one. Use its first token "
            f"({pieces[0]!r}) or pick an answer that is a single token; most need a leading space."
        )
    return ids[0]


def top_tokens(model, probs: Float[Tensor, " d_vocab"], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most likely tokens of one distribution as ``(token string, probability)``, most
    likely first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if probs.ndim != 1:
        raise ValueError(
            f"expected one distribution of shape [d_vocab], got shape {tuple(probs.shape)}; "
            "index the batch first, e.g. probs[0]"
        )
    values, indices = probs.topk(k)
    return [
        (model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=False)
    ]


def format_top(top: list[tuple[str, float]], digits: int = 3) -> str:
    """One printable line from ``top_tokens`` / ``top_k``:
    ``' Paris' 0.753  ' T' 0.032 ...``."""
    return "  ".join(f"{token!r} {p:.{digits}f}" for token, p in top)


def answer_rank(scores: Float[Tensor, "... d_vocab"], token_id: int) -> Int[Tensor, " ..."]:
    """1-based rank of ``token_id`` in each distribution (1 = the most likely token).

    ``scores`` are probabilities, log-probabilities or logits (any increasing function of them gives
    the same rank); ties count in the token's favour: rank = 1 + the number of strictly larger
    scores.
    """
    return (scores > scores[..., token_id : token_id + 1]).sum(dim=-1) + 1
