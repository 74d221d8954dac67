"""Checks for lesson 04 (causal tracing).

The truth for every traced number is the fast engine ``course_utils.tracing.trace``: an independent
implementation (it runs the model's weights directly, skipping unchanged layers and positions) that
the unit tests hold equal to ROME's loop to 1e-5. The hooks are checked against invariants.
"""

from __future__ import annotations

from ..facts import subject_token_span
from . import (
    Fail,
    call,
    compare_tensors,
    expect,
    expect_tensor,
    hidden_rng,
    measured,
    random_fact,
    run_check,
    within,
)

PROMPT, SUBJECT, ANSWER = "The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris"
HIDDEN_PROMPT, HIDDEN_SUBJECT, HIDDEN_ANSWER = (
    "The Colosseum is located in the city of",
    "The Colosseum",
    " Rome",
)
# The heatmap checks run one forward pass per cell of the learner's loop: short prompts keep them
# cheap.
SHORT_FACT = ("The capital of Japan is", "Japan", " Tokyo")
HIDDEN_SHORT_FACT = ("Paris is the capital of", "Paris", " France")
SEED = 0
ATOL = 1e-5
KINDS = ("hidden", "mlp", "attn")
SHORT_TOKENS = 7  # a drawn "short" fact has at most this many tokens (BOS included)
# While grading, a hidden test draws its fact from the course's known facts (tracing needs a fact
# the model knows: restoring a state can only bring back an answer the clean run gives; the list is
# public, the draw is not), and draws its noise seed, kinds, layers and positions.


def _setup(model, hidden: bool, samples: int, short: bool = False, rng=None):
    """tokens, answer id, span, noise scale, a noise hook and the clean cache for the check's
    fact (drawn with ``rng``, a hidden test's generator while grading)."""
    import torch

    from .. import tracing
    from ..hooks import make_noise_hook
    from ..predictions import answer_token_id

    if short:
        prompt, subject, answer = HIDDEN_SHORT_FACT if hidden else SHORT_FACT
    else:
        prompt, subject, answer = (
            (HIDDEN_PROMPT, HIDDEN_SUBJECT, HIDDEN_ANSWER) if hidden else (PROMPT, SUBJECT, ANSWER)
        )
    seed = SEED
    if rng is not None:
        fact = random_fact(rng)
        while short and model.to_tokens(fact["prompt"]).shape[1] > SHORT_TOKENS:
            fact = random_fact(rng)
        prompt, subject, answer, seed = (
            fact["prompt"],
            fact["subject"],
            fact["answer"],
            rng.randrange(10_000),
        )
    scale = tracing.rome_noise_scale(
        model
    )  # trace()'s default: ROME's rule over the course's facts
    span = subject_token_span(model, prompt, subject)
    tokens = model.to_tokens(prompt)
    names = tuple(tracing.HOOK_OF_KIND.values())
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith(names))
    noise_hook = make_noise_hook(list(range(*span)), scale, seed=seed)
    return dict(
        prompt=prompt,
        subject=subject,
        answer=answer,
        tokens=tokens,
        span=span,
        scale=scale,
        answer_id=answer_token_id(model, answer),
        noise_hook=noise_hook,
        cache=cache,
        samples=samples,
        seed=seed,
    )


def _call_learner(fn, model, s, *args, name: str):
    """``fn(model, tokens, answer_id, noise_hook, clean_cache, *args, samples)`` on the check's
    setup ``s``: the signature the three tracing exercises share."""
    return call(
        fn,
        model,
        s["tokens"],
        s["answer_id"],
        s["noise_hook"],
        s["cache"],
        *args,
        s["samples"],
        name=name,
    )


def _fast(model, s, kind, layers, positions):
    from .. import tracing

    return tracing.trace(
        model,
        s["prompt"],
        s["subject"],
        s["answer"],
        kind,
        samples=s["samples"],
        noise_scale=s["scale"],
        seed=s["seed"],
        layers=layers,
        positions=positions,
        progress=False,
    )


def check_subject_noise_hook(fn, model, hidden: bool = False):
    """fn(span, scale, seed) -> hook(embed [sample, pos, d_model], hook) adding the course's
    noise."""
    import torch

    from ..tracing import make_noise

    span, scale, seed = ((3, 6), 0.25, 7) if hidden else ((2, 5), 0.1, 0)
    rng = hidden_rng("04.1", hidden)
    if rng is not None:  # a span of 1 to 3 of the 9 positions, not the BOS
        start = rng.randrange(1, 7)
        span = (start, start + rng.randint(1, 3))
        scale, seed = rng.choice([0.05, 0.1, 0.25, 0.5]), rng.randrange(10_000)

    def body():
        hook = call(fn, span, scale, seed, name="make_subject_noise_hook")
        expect(
            callable(hook),
            "make_subject_noise_hook should return a function (the hook), got "
            f"{type(hook).__name__}",
        )
        embed = torch.randn((4, 9, model.cfg.d_model), generator=torch.Generator().manual_seed(123))
        original = embed.clone()
        out = call(hook, embed, None, name="your hook")
        expect(
            torch.equal(embed, original),
            "your hook changed its input in place; work on a copy (embed.clone())",
        )
        expect_tensor(out, embed, what="the noised embeddings", dims="sample pos d_model")
        outside = torch.ones(9, dtype=torch.bool)
        outside[span[0] : span[1]] = False
        expect(
            torch.equal(out[:, outside], embed[:, outside]),
            f"positions outside the subject span {span} changed; add noise only at positions "
            f"{span[0]}..{span[1] - 1}",
        )
        noise = make_noise(4, span[1] - span[0], model.cfg.d_model, scale, seed)
        compare_tensors(
            out[:, span[0] : span[1]] - embed[:, span[0] : span[1]],
            noise,
            what="the added noise",
            atol=1e-6,
            dims="sample pos d_model",
            hint="draw scale * torch.randn((sample, n_subject_tokens, d_model), "
            "generator=torch.Generator().manual_seed(seed))",
        )
        again = call(hook, embed, None, name="your hook")
        expect(
            torch.equal(again, out),
            "two calls gave different noise: seed a new generator inside the hook, at every call",
        )
        return f"adds seeded noise of std {scale} only to the subject's positions ({within(1e-6)})"

    run_check("04.1 subject noise hook", body, hidden=hidden)


def check_restore_hook(fn, model, hidden: bool = False):
    """fn(clean_act [pos, d_model], position) -> hook(act [sample, pos, d_model], hook) restoring
    one position."""
    import torch

    position, seed = (4 if hidden else 2), 5
    rng = hidden_rng("04.2", hidden)
    if rng is not None:
        position, seed = rng.randrange(7), rng.randrange(10_000)

    def body():
        generator = torch.Generator().manual_seed(seed)
        clean = torch.randn((7, model.cfg.d_model), generator=generator)
        clean_copy = clean.clone()
        hook = call(fn, clean, position, name="make_restore_hook")
        expect(
            callable(hook),
            f"make_restore_hook should return a function (the hook), got {type(hook).__name__}",
        )
        act = torch.randn((3, 7, model.cfg.d_model), generator=generator)
        original = act.clone()
        out = call(hook, act, None, name="your hook")
        expect(
            torch.equal(act, original),
            "your hook changed its input in place; work on a copy (act.clone())",
        )
        expect(
            torch.equal(clean, clean_copy),
            "your hook changed the clean activations; only read them",
        )
        expected = original.clone()
        expected[:, position] = clean[position]
        compare_tensors(
            out,
            expected,
            what="the restored activation",
            atol=0.0,
            dims="sample pos d_model",
            hint=f"every sample gets clean_act[{position}] at position {position}; the rest stays "
            "as it was",
        )
        return f"restores position {position} in every sample and leaves the rest untouched"

    run_check("04.2 restore hook", body, hidden=hidden)


def check_trace_cell(fn, model, hidden: bool = False):
    """fn(model, tokens, answer_id, noise_hook, clean_cache, kind, layer, position, samples) ->
    float."""
    samples = 4  # equality does not depend on the sample count; fewer samples keep the check fast
    rng = hidden_rng("04.3", hidden)

    def body():
        s = _setup(model, hidden, samples, rng=rng)
        start, stop = s["span"]
        last = s["tokens"].shape[1] - 1
        cells = [("hidden", 3, stop - 1), ("mlp", 6, stop - 1), ("attn", 20, last)]
        if rng is not None:  # a subject token, any position, the last position
            n_layers = model.cfg.n_layers
            cells = [
                ("hidden", rng.randrange(n_layers), rng.randrange(start, stop)),
                ("mlp", rng.randrange(n_layers), rng.randrange(last + 1)),
                ("attn", rng.randrange(n_layers), last),
            ]
        elif hidden:
            cells = [("hidden", 12, start), ("mlp", 1, stop - 1), ("attn", 27, last)]
        for kind, layer, position in cells:
            got = _call_learner(fn, model, s, kind, layer, position, name="trace_cell")
            expect(
                isinstance(got, float),
                "trace_cell should return a Python float (use float(...)), got "
                f"{type(got).__name__}",
            )
            want = float(_fast(model, s, kind, [layer], [position]).scores[layer, position])
            diff = measured(abs(got - want))
            if diff > ATOL:
                window = "" if kind == "hidden" else " over window_layers(layer, n_layers, kind)"
                raise Fail(
                    f"{kind} cell (layer {layer}, position {position}): p = {got:.5f}, expected "
                    f"{want:.5f}. "
                    "Hint: noise hook on hook_embed plus a restore hook at "
                    f"blocks.L.{_hook(kind)}{window}; "
                    "average p(answer) at the last position over the samples",
                    diff,
                )
        return f"3 cells (hidden, mlp, attn) match the fast engine ({within(ATOL)})"

    run_check("04.3 trace_cell", body, hidden=hidden)


def _hook(kind):
    from ..tracing import HOOK_OF_KIND

    return HOOK_OF_KIND[kind]


def check_trace_row(fn, model, hidden: bool = False):
    """fn(model, tokens, answer_id, noise_hook, clean_cache, kind, position, samples) ->
    Float[Tensor, " layer"]."""
    samples = 2
    rng = hidden_rng("04.4", hidden)

    def body():
        s = _setup(model, hidden, samples, rng=rng)
        kind, position = ("mlp", s["span"][1] - 1) if hidden else ("hidden", s["span"][1] - 1)
        if rng is not None:
            kind, position = rng.choice(KINDS), rng.randrange(s["tokens"].shape[1])
        got = _call_learner(fn, model, s, kind, position, name="trace_row")
        want = _fast(model, s, kind, None, [position]).scores[:, position]
        compare_tensors(
            got,
            want,
            what=f"the {kind} row at position {position}",
            atol=ATOL,
            dims="layer",
            hint="one trace_cell per layer, in layer order, as a float32 tensor",
        )
        return f"{kind} row of {len(want)} layers matches the fast engine ({within(ATOL)})"

    run_check("04.4 trace_row", body, hidden=hidden)


def check_trace_heatmap(fn, model, hidden: bool = False):
    """fn(model, tokens, answer_id, noise_hook, clean_cache, kind, layers, samples) ->
    Float[Tensor, "layer pos"]."""
    samples = 2
    rng = hidden_rng("04.5", hidden)

    def body():
        s = _setup(model, hidden, samples, short=True, rng=rng)
        kind, layers = ("attn", [4, 25]) if hidden else ("hidden", [5, 22])
        if rng is not None:
            kind, layers = rng.choice(KINDS), sorted(rng.sample(range(model.cfg.n_layers), 2))
        got = _call_learner(fn, model, s, kind, layers, name="trace_heatmap")
        want = _fast(model, s, kind, layers, None).scores[layers]
        compare_tensors(
            got,
            want,
            what=f"the {kind} heatmap for layers {layers}",
            atol=ATOL,
            dims="layer pos",
            hint="one row per layer in `layers`, one column per position (BOS included)",
        )
        return (
            f"{kind} heatmap ({len(layers)} layers × {want.shape[1]} positions) matches the fast "
            f"engine ({within(ATOL)})"
        )

    run_check("04.5 trace_heatmap", body, hidden=hidden)
