"""Checks for lesson 00 (first look at the model)."""

from __future__ import annotations

from . import (
    Fail,
    call,
    compare_tensors,
    expect,
    hidden_rng,
    random_prompt,
    run_check,
    within,
)

PROMPTS = ["The Eiffel Tower is located in the city of", "The capital of Japan is"]
HIDDEN_PROMPTS = [
    "The Colosseum is located in the city of",
    "Albert Einstein developed the theory of",
]


def _prompts(hidden: bool, exercise: str) -> list[str]:
    rng = hidden_rng(exercise, hidden)
    if rng is None:
        return HIDDEN_PROMPTS if hidden else PROMPTS
    return [random_prompt(rng) for _ in HIDDEN_PROMPTS]  # drawn at grading time


def _truth_probs(model, prompt):
    import torch

    with torch.no_grad():
        return model(model.to_tokens(prompt))[0, -1].softmax(-1)


def check_next_token_probs(fn, model, hidden: bool = False):
    """fn(model, prompt) -> Float[Tensor, " d_vocab"], the next-token distribution after
    ``prompt``."""
    prompts = _prompts(hidden, "00.1")

    def body():
        for prompt in prompts:
            probs = call(fn, model, prompt, name="next_token_probs")
            compare_tensors(
                probs,
                _truth_probs(model, prompt),
                what=f"probabilities for {prompt!r}",
                atol=1e-5,
                dims="d_vocab",
                hint="take the logits at the last position of the only batch item, then "
                "softmax over the vocabulary",
            )
            expect(
                abs(float(probs.sum()) - 1) < 1e-4,
                "probabilities should sum to 1 (softmax over the last dimension)",
            )
        return f"matches the model's own softmax on {len(prompts)} prompts ({within(1e-5)})"

    run_check("00.1 next_token_probs", body, hidden=hidden)


def check_top_k(fn, model, hidden: bool = False):
    """fn(model, prompt, k) -> list of (token string, probability), most likely first."""
    prompts = _prompts(hidden, "00.2")

    def body():
        for prompt in prompts:
            for k in (1, 5):
                got = call(fn, model, prompt, k, name="top_k")
                expect(
                    isinstance(got, list), f"top_k should return a list, got {type(got).__name__}"
                )
                expect(len(got) == k, f"top_k(..., k={k}) returned {len(got)} items")
                values, indices = _truth_probs(model, prompt).topk(k)
                for rank, (item, v, i) in enumerate(zip(got, values, indices, strict=False), 1):
                    expect(
                        isinstance(item, tuple) and len(item) == 2,
                        f"each item should be a (token, probability) tuple, got {item!r}",
                    )
                    token, prob = item
                    want = model.tokenizer.decode([int(i)])
                    if token != want:
                        raise Fail(
                            f"rank {rank} for {prompt!r}: expected token {want!r}, got {token!r}. "
                            "Hint: sort by probability, most likely first, and decode each id on "
                            "its own"
                        )
                    expect(
                        abs(float(prob) - float(v)) < 1e-5,
                        f"rank {rank} for {prompt!r}: probability {float(prob):.4f}, expected "
                        f"{float(v):.4f}",
                    )
        return f"top-1 and top-5 lists match on {len(prompts)} prompts"

    run_check("00.2 top_k", body, hidden=hidden)
