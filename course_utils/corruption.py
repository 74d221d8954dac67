"""Corrupting the input embeddings (lesson 03): how much of a known answer survives?

Each function runs the model with a hook on ``hook_embed`` built by ``course_utils.hooks`` and returns
p(answer) at the last position. Positions are ``model.to_tokens(prompt)`` coordinates: position 0 is the
BOS (``<|endoftext|>``) and is never part of a subject (``course_utils.facts.subject_token_span``).
Lesson 03 has the learner write these three; later lessons import them from here.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .hooks import make_noise_hook, make_zero_ablation
from .predictions import answer_token_id


@torch.no_grad()
def corrupted_answer_prob(model, prompt: str, answer: str, positions: list[int]) -> float:
    """p(answer | prompt) with the embeddings at ``positions`` set to zero."""
    tokens = model.to_tokens(prompt)
    logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", make_zero_ablation(positions))])
    return float(logits[0, -1].softmax(-1)[answer_token_id(model, answer)])


@torch.no_grad()
def noised_answer_probs(model, prompt: str, answer: str, positions: list[int], scale: float,
                        n_samples: int, seed: int = 0) -> Float[Tensor, "sample"]:
    """p(answer) for ``n_samples`` draws of Gaussian noise (std ``scale``) added to the embeddings at
    ``positions``: one batched run of the prompt repeated ``n_samples`` times, with one
    ``make_noise_hook(positions, scale, seed=seed)``, so sample i gets the i-th slice of that seed's noise."""
    tokens = model.to_tokens(prompt).repeat(n_samples, 1)  # [sample, pos]
    logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", make_noise_hook(positions, scale, seed=seed))])
    return logits[:, -1].softmax(-1)[:, answer_token_id(model, answer)]


@torch.no_grad()
def single_token_effects(model, prompt: str, answer: str) -> Float[Tensor, "pos"]:
    """p(answer) with each position's embedding zeroed on its own; entry 0 (the BOS, never corrupted)
    holds the clean p(answer). One batched run: item i zeroes position i."""
    tokens = model.to_tokens(prompt)
    n_pos = tokens.shape[1]

    def zero_own_position(embed: Float[Tensor, "batch pos d_model"], hook=None):
        embed = embed.clone()
        for i in range(1, n_pos):
            embed[i, i] = 0.0
        return embed

    logits = model.run_with_hooks(tokens.repeat(n_pos, 1), fwd_hooks=[("hook_embed", zero_own_position)])
    return logits[:, -1].softmax(-1)[:, answer_token_id(model, answer)]
