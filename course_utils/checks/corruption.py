"""Checks for lesson 03 (corrupting the input embeddings).

The truth is computed without hooks: the Hugging Face model inside the bridge
(``model.original_model``) is run on embeddings edited directly (``inputs_embeds``), so a check
agrees with the learner only when their hook really changed what the model read.
"""

from __future__ import annotations

from . import (
    Fail,
    call,
    compare_tensors,
    expect,
    hidden_rng,
    measured,
    random_fact,
    run_check,
    within,
)

EIFFEL = ("The Eiffel Tower is located in the city of", " Paris")
JAPAN = ("The capital of Japan is", " Tokyo")
COLOSSEUM = ("The Colosseum is located in the city of", " Rome")
ATOL = 1e-4
# While grading, a hidden test draws its fact from the course's known facts (p(answer) must be large
# enough that corrupting the input measurably lowers it; the list is public, the draw is not) and
# draws its positions, noise scale, sample count and seed.


def _truth_probs(model, prompt: str, answer: str, edit, batch: int = 1):
    """p(answer) at the last position after ``edit(embeds)`` changes the [batch, pos, d_model]
    embeddings."""
    import torch

    from ..predictions import answer_token_id

    with torch.no_grad():
        tokens = model.to_tokens(prompt)
        embeds = model.original_model.get_input_embeddings()(tokens).repeat(batch, 1, 1)
        embeds = edit(embeds.clone())
        logits = model.original_model(inputs_embeds=embeds).logits
    return logits[:, -1].float().softmax(-1)[:, answer_token_id(model, answer)]


def _as_float(value, what: str) -> float:
    import torch

    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Fail(
            f"{what}: expected a float, got {type(value).__name__}. Hint: return float(probability)"
        )
    return float(value)


def check_corrupted_answer_prob(fn, model, hidden: bool = False):
    """fn(model, prompt, answer, positions) -> float, p(answer) with those embeddings zeroed."""
    cases = (
        [(*COLOSSEUM, [1, 2, 3, 4]), (*COLOSSEUM, [9])]
        if hidden
        else [(*EIFFEL, [1, 2, 3, 4]), (*JAPAN, [4])]
    )
    rng = hidden_rng("03.1", hidden)
    if rng is not None:  # the subject of one drawn fact, then one position of another
        fact, other = random_fact(rng), random_fact(rng)
        n_pos = model.to_tokens(other["prompt"]).shape[1]
        cases = [
            (fact["prompt"], fact["answer"], fact["subject_positions"]),
            (other["prompt"], other["answer"], [rng.randrange(1, n_pos)]),
        ]

    def body():
        for prompt, answer, positions in cases:
            got = _as_float(
                call(fn, model, prompt, answer, list(positions), name="corrupted_answer_prob"),
                f"for {prompt!r}",
            )

            def zero(embeds, positions=positions):
                embeds[:, positions] = 0.0
                return embeds

            want = float(_truth_probs(model, prompt, answer, zero)[0])
            diff = measured(abs(got - want))
            if diff > ATOL:
                clean = float(_truth_probs(model, prompt, answer, lambda e: e)[0])
                hint = (
                    " It equals the clean probability: is the hook attached to 'hook_embed' and "
                    "returned?"
                    if abs(got - clean) < ATOL
                    else " Zero exactly `positions` of hook_embed (position 0 is the BOS), take "
                    "the last position, softmax."
                )
                raise Fail(
                    f"p({answer!r}) for {prompt!r} with positions {positions} zeroed: expected "
                    f"{want:.4f}, "
                    f"got {got:.4f}.{hint}",
                    diff,
                )
        return f"matches zeroed inputs_embeds on {len(cases)} cases ({within(ATOL)})"

    run_check("03.1 corrupted_answer_prob", body, hidden=hidden)


def check_noised_answer_probs(fn, model, hidden: bool = False):
    """fn(model, prompt, answer, positions, scale, n_samples, seed) -> Float[Tensor, " sample"]."""
    import torch

    cases = (
        [(*COLOSSEUM, [1, 2, 3, 4], 0.2, 3, 7)] if hidden else [(*EIFFEL, [1, 2, 3, 4], 0.1, 4, 0)]
    )
    rng = hidden_rng("03.2", hidden)
    if rng is not None:
        fact = random_fact(rng)
        scale, n_samples = rng.choice([0.05, 0.1, 0.2, 0.3]), rng.randint(2, 4)
        cases = [
            (
                fact["prompt"],
                fact["answer"],
                fact["subject_positions"],
                scale,
                n_samples,
                rng.randrange(10_000),
            )
        ]

    def body():
        for prompt, answer, positions, scale, n_samples, seed in cases:
            got = call(
                fn,
                model,
                prompt,
                answer,
                list(positions),
                scale,
                n_samples,
                seed,
                name="noised_answer_probs",
            )

            def noise(embeds, positions=positions, scale=scale, n_samples=n_samples, seed=seed):
                generator = torch.Generator().manual_seed(seed)
                draw = torch.randn(
                    (n_samples, len(positions), embeds.shape[-1]), generator=generator
                )
                embeds[:, positions] += draw * scale
                return embeds

            want = _truth_probs(model, prompt, answer, noise, batch=n_samples)
            compare_tensors(
                got,
                want,
                what=f"p({answer!r}) per noise sample",
                atol=ATOL,
                dims="sample",
                hint="one run_with_hooks on the prompt repeated n_samples times "
                "(tokens.repeat(n_samples, 1)) "
                "with a single make_noise_hook(positions, scale, seed=seed) on 'hook_embed'",
            )
        return f"matches noised inputs_embeds sample by sample ({within(ATOL)})"

    run_check("03.2 noised_answer_probs", body, hidden=hidden)


def check_single_token_effects(fn, model, hidden: bool = False):
    """fn(model, prompt, answer) -> Float[Tensor, " pos"]; entry 0 holds the clean p(answer)."""
    prompt, answer = COLOSSEUM if hidden else JAPAN
    rng = hidden_rng("03.3", hidden)
    if rng is not None:
        fact = random_fact(rng)
        prompt, answer = fact["prompt"], fact["answer"]

    def body():
        got = call(fn, model, prompt, answer, name="single_token_effects")
        n_pos = model.to_tokens(prompt).shape[1]

        def zero_each(embeds):
            for i in range(1, n_pos):
                embeds[i, i] = 0.0
            return embeds

        want = _truth_probs(model, prompt, answer, zero_each, batch=n_pos)
        compare_tensors(
            got,
            want,
            what=f"effects for {prompt!r}",
            atol=ATOL,
            dims="pos",
            hint="entry i is p(answer) with only position i zeroed; entry 0 (the BOS) is the "
            "clean p(answer), never corrupted",
        )
        expect(
            int(got.argmin()) == int(want.argmin()),
            "the most important position differs from the truth",
        )
        return f"all {n_pos} positions match zeroed inputs_embeds ({within(ATOL)})"

    run_check("03.3 single_token_effects", body, hidden=hidden)
