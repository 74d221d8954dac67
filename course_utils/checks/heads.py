"""Checks for lesson 06 (attention heads).

Each check compares the learner's function with an independent truth: the bridge's own per-head
outputs (``attn.hook_result``) and the model's logits, attention scores re-normalised with a
softmax, lesson 04's fast engine (the model's weights run directly, not the bridge's hooks), an
identity (a head's direct logits are its attention-weighted OV read-outs), or singular values.
"""

from __future__ import annotations

import torch

from . import (
    Fail,
    call,
    compare_tensors,
    expect,
    hidden_rng,
    measured,
    random_fact_pair,
    random_prompt,
    run_check,
    within,
)

PROMPT, ANSWER, FOIL = "The Eiffel Tower is located in the city of", " Paris", " Rome"
CORRUPTED = "The Colosseum is located in the city of"
HIDDEN = (
    "The Colosseum is located in the city of",
    " Rome",
    " Paris",
    "The Eiffel Tower is located in the city of",
)
_TRUTH: dict = {}
_NAMES = (
    "attn.hook_z",
    "attn.hook_pattern",
    "attn.hook_attn_scores",
    "attn.hook_result",
    "ln1.hook_out",
    "hook_embed",
    "hook_mlp_out",
    "ln_final.hook_scale",
)


def _case(hidden: bool, model=None, rng=None):
    """(prompt, answer, foil, corrupted prompt). While grading (``rng``), a hidden test draws a
    known fact from the course's list (the heads must write an answer the model knows; the list is
    public, the draw is not) and, as foil and corrupted prompt, another fact of the same relation
    and token length with a different answer."""
    if rng is not None:
        fact, other = random_fact_pair(rng, lambda prompt: model.to_tokens(prompt).shape[1])
        return fact["prompt"], fact["answer"], other["answer"], other["prompt"]
    if hidden:
        return HIDDEN
    return PROMPT, ANSWER, FOIL, CORRUPTED


def _truth(model, prompt: str):
    """(tokens, logits, cache with per-head results) of ``model`` on ``prompt``, computed once."""
    key = (id(model), prompt)
    if key not in _TRUTH:
        tokens = model.to_tokens(prompt)
        previous = bool(getattr(model.cfg, "use_attn_result", False))
        model.set_use_attn_result(True)
        try:
            with torch.no_grad():
                logits, cache = model.run_with_cache(
                    tokens, names_filter=lambda n: n.endswith(_NAMES)
                )
        finally:
            model.set_use_attn_result(previous)
        _TRUTH[key] = (tokens, logits, cache)
    return _TRUTH[key]


def _ids(model, *answers):
    from ..predictions import answer_token_id

    return [answer_token_id(model, a) for a in answers]


def _true_head_dla(model, cache, answer_id, foil_id):
    """Direct effect of each head on the logit difference at the last position, from hook_result."""
    results = torch.stack(
        [cache[f"blocks.{layer}.attn.hook_result"][0, -1] for layer in range(model.cfg.n_layers)]
    )  # layer n_heads d_model
    scale = cache["ln_final.hook_scale"][0, -1]
    direction = model.ln_final.w * (model.W_U[:, answer_id] - model.W_U[:, foil_id])
    return (results / scale) @ direction, results, scale, direction


# ---------------------------------------------------------------------------------------------


def check_per_head_dla(fn, model, hidden: bool = False):
    """fn(model, cache, answer_id, foil_id) -> Float[Tensor, "layer n_heads"]."""
    rng = hidden_rng("06.1", hidden)

    def body():
        prompt, answer, foil, _ = _case(hidden, model, rng)
        tokens, logits, cache = _truth(model, prompt)
        answer_id, foil_id = _ids(model, answer, foil)
        truth, results, scale, direction = _true_head_dla(model, cache, answer_id, foil_id)
        with torch.no_grad():
            got = call(fn, model, cache, answer_id, foil_id, name="per_head_dla")
        if (
            isinstance(got, torch.Tensor)
            and got.shape == truth.T.shape
            and got.shape != truth.shape
        ):
            raise Fail(
                f"per_head_dla: expected [layer n_heads] = {tuple(truth.shape)}, got "
                f"{tuple(got.shape)}: your axes are swapped (heads first)."
            )
        if isinstance(got, torch.Tensor) and got.shape == truth.shape:
            no_scale = results @ direction
            if torch.allclose(got, no_scale, atol=1e-3, rtol=1e-4):
                raise Fail(
                    "per_head_dla: you forgot the final norm's scale: divide each head's output "
                    f"by ln_final.hook_scale at the last position ({float(scale):.2f}) "
                    "before projecting."
                )
            no_gain = (results / scale) @ (model.W_U[:, answer_id] - model.W_U[:, foil_id])
            if torch.allclose(got, no_gain, atol=1e-3, rtol=1e-4):
                raise Fail(
                    "per_head_dla: the final RMSNorm also multiplies by its gain "
                    "model.ln_final.w: project on ln_final.w * (W_U[:, answer] - W_U[:, foil])."
                )
            raw = (results / scale) @ (model.ln_final.w * model.W_U[:, answer_id])
            if torch.allclose(got, raw, atol=1e-3, rtol=1e-4):
                raise Fail(
                    "per_head_dla: that is the attribution to logit(answer) alone: subtract "
                    "the foil's unembedding column."
                )
        compare_tensors(
            got,
            truth,
            what="per-head direct logit attribution",
            atol=1e-3,
            rtol=1e-4,
            dims="layer n_heads",
            hint="z[0, -1] of each layer @ W_O[layer] gives [n_heads d_model]; divide by the final "
            "scale, then dot with ln_final.w * (W_U[:, answer] - W_U[:, foil])",
        )
        # the invariant: heads + embedding + MLPs + bias = the model's logit difference
        n_layers = model.cfg.n_layers
        rest = cache["hook_embed"][0, -1] + sum(
            cache[f"blocks.{layer}.hook_mlp_out"][0, -1] for layer in range(n_layers)
        )
        with torch.no_grad():
            total = float(
                got.sum() + (rest / scale) @ direction + model.b_U[answer_id] - model.b_U[foil_id]
            )
        actual = float(logits[0, -1, answer_id] - logits[0, -1, foil_id])
        expect(
            abs(total - actual) < 1e-2,
            f"heads + embedding + MLPs give {total:.3f}, "
            f"the model's logit difference is {actual:.3f}",
        )
        return (
            f"matches the bridge's hook_result projected on the logit difference "
            f"({within(1e-3, 1e-4)}); with the embedding and MLPs it sums to the model's "
            "logit difference"
        )

    run_check("06.1 per_head_dla", body, hidden=hidden)


def check_attention_row(fn, model, hidden: bool = False):
    """fn(cache, layer, head, query_pos) -> Float[Tensor, " pos"]."""
    rng = hidden_rng("06.2", hidden)

    def body():
        prompt = random_prompt(rng) if rng is not None else _case(hidden)[0]
        tokens, _, cache = _truth(model, prompt)
        cases = [(29, 1, -1), (23, 4, -1), (3, 0, 5)] if not hidden else [(24, 4, -1), (0, 8, 7)]
        if rng is not None:  # two heads, from the last position and from a drawn one
            n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
            cases = [
                (rng.randrange(n_layers), rng.randrange(n_heads), query)
                for query in (-1, rng.randrange(1, tokens.shape[1]))
            ]
        for layer, head, query in cases:
            scores = cache[f"blocks.{layer}.attn.hook_attn_scores"][0, head]  # [query key]
            truth = scores.softmax(-1)[query]
            got = call(fn, cache, layer, head, query, name="attention_row")
            pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]
            if isinstance(got, torch.Tensor) and got.shape == truth.shape:
                if torch.allclose(got, pattern[head, :, query], atol=1e-5) and not torch.allclose(
                    got, truth, atol=1e-5
                ):
                    raise Fail(
                        "attention_row: you read a column (how much each query attends to "
                        "the query position): pattern[batch, head, query, key] — index the "
                        "query, keep every key."
                    )
                if torch.allclose(
                    got, pattern[query % pattern.shape[0], :, head], atol=1e-5
                ) and not torch.allclose(got, truth, atol=1e-5):
                    raise Fail(
                        "attention_row: the head axis is axis 1 of hook_pattern "
                        "[batch n_heads query key]."
                    )
            compare_tensors(
                got,
                truth,
                what=f"attention of L{layer}H{head} from position {query}",
                atol=1e-5,
                dims="pos",
                hint="cache[f'blocks.{layer}.attn.hook_pattern'][0, head, query_pos]",
            )
        return f"matches softmax(hook_attn_scores) on {len(cases)} heads ({within(1e-5)})"

    run_check("06.2 attention_row", body, hidden=hidden)


def check_patch_heads(fn, model, hidden: bool = False):
    """fn(model, base_tokens, source_z, layer, answer_id, foil_id) -> Float[Tensor, " n_heads"]."""
    from ..heads import head_patching

    rng = hidden_rng("06.3", hidden)

    def body():
        prompt, answer, foil, corrupted = _case(hidden, model, rng)
        answer_id, foil_id = _ids(model, answer, foil)
        clean_tokens, _, clean_cache = _truth(model, prompt)
        corrupted_tokens = model.to_tokens(corrupted)
        layers = (23,) if not hidden else (21, 29)
        if rng is not None:
            layers = tuple(sorted(rng.sample(range(model.cfg.n_layers), 2)))
        truth = head_patching(
            model, corrupted_tokens, clean_tokens, answer_id, foil_id, layers=layers
        )
        for layer in layers:
            source_z = clean_cache[f"blocks.{layer}.attn.hook_z"]
            with torch.no_grad():
                got = call(
                    fn,
                    model,
                    corrupted_tokens,
                    source_z,
                    layer,
                    answer_id,
                    foil_id,
                    name="patch_heads",
                )
            compare_tensors(
                got,
                truth[layer],
                what=f"logit difference after patching each head of layer {layer}",
                atol=2e-3,
                rtol=1e-4,
                dims="n_heads",
                hint="run n_heads copies of the base prompt; in copy h replace z[h, -1, h] "
                "(batch, "
                "last position, head h) by source_z[0, -1, h], and nothing else",
            )
        return (
            f"matches lesson 04's fast engine (weights run directly) at layers {list(layers)} "
            f"({within(2e-3, 1e-4)})"
        )

    run_check("06.3 patch_heads", body, hidden=hidden)


def check_ov_logits(fn, model, hidden: bool = False):
    """fn(model, layer, head, x_normed, final_scale) -> Float[Tensor, "pos d_vocab"]."""

    rng = hidden_rng("06.4", hidden)

    def body():
        prompt = random_prompt(rng) if rng is not None else _case(hidden)[0]
        _, _, cache = _truth(model, prompt)
        scale = cache["ln_final.hook_scale"][0, -1]
        heads = [(23, 4), (29, 1)] if not hidden else [(23, 5), (29, 0)]
        if rng is not None:
            n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
            heads = [(rng.randrange(n_layers), rng.randrange(n_heads)) for _ in heads]
        for layer, head in heads:
            x = cache[f"blocks.{layer}.ln1.hook_out"][0]  # [pos d_model]
            with torch.no_grad():
                got = call(fn, model, layer, head, x, float(scale), name="ov_logits")
            expect(
                isinstance(got, torch.Tensor) and got.ndim == 2 and got.shape[0] == x.shape[0],
                f"ov_logits: expected [pos d_vocab] = ({x.shape[0]}, {model.cfg.d_vocab}), got "
                f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}",
            )
            pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, head, -1]  # [key]
            result = cache[f"blocks.{layer}.attn.hook_result"][0, -1, head]  # [d_model]
            truth = (result / scale * model.ln_final.w) @ model.W_U  # the head's direct logits
            mixed = pattern @ got
            ratio = float(mixed.norm() / truth.norm())
            if abs(ratio / float(scale) - 1) < 1e-2:
                raise Fail(
                    "ov_logits: divide by final_scale: the final RMSNorm divides the "
                    "stream by its scale before the unembedding."
                )
            compare_tensors(
                mixed,
                truth,
                what=f"attention-weighted OV logits of L{layer}H{head}",
                atol=2e-3,
                rtol=1e-3,
                dims="d_vocab",
                hint="x @ W_V[layer, head // 3] @ W_O[layer, head]: query head h reads "
                "key/value "
                "head h // (n_heads // n_kv_heads); then / final_scale * ln_final.w @ W_U",
            )
        return (
            f"weighted by the real attention pattern, your OV logits give the head's direct "
            f"logits from hook_result ({within(2e-3, 1e-3)})"
        )

    run_check("06.4 ov_logits", body, hidden=hidden)


def check_composition_score(fn, hidden: bool = False):
    """fn(left [a, b], right [b, c]) -> float."""

    def truth(left, right):
        def frob(m):
            return torch.linalg.svdvals(m).pow(2).sum().sqrt()

        return float(frob(left @ right) / (frob(left) * frob(right)))

    def body():
        rng = hidden_rng("06.5", hidden)
        gen = torch.Generator().manual_seed(
            rng.randrange(10_000) if rng is not None else 7 if hidden else 3
        )
        cases = [
            (torch.randn(20, 6, generator=gen), torch.randn(6, 20, generator=gen)),
            (torch.randn(12, 12, generator=gen), torch.randn(12, 4, generator=gen)),
        ]
        u = torch.zeros(5, 5)
        u[0, 0] = 2.0
        v = torch.zeros(5, 5)
        v[1, 1] = 3.0
        cases.append((u, v))  # orthogonal: composition 0
        cases.append((u, u.T.clone()))  # the same rank-1 direction: composition 1
        for left, right in cases:
            got = call(fn, left, right, name="composition_score")
            try:
                value = float(got)
            except (TypeError, ValueError, RuntimeError):
                raise Fail(
                    f"composition_score: expected a number, got {type(got).__name__}"
                ) from None
            expected = truth(left, right)
            if measured(abs(value - expected)) > 1e-4:
                spectral = float(
                    torch.linalg.matrix_norm(left @ right, ord=2)
                    / (
                        torch.linalg.matrix_norm(left, ord=2)
                        * torch.linalg.matrix_norm(right, ord=2)
                    )
                )
                hint = (
                    "use the Frobenius norm (torch.linalg.matrix_norm default, 'fro'), not the "
                    "spectral norm"
                    if abs(value - spectral) < 1e-4
                    else "||left @ right||_F / (||left||_F * ||right||_F): the product first, in "
                    "that order, then divide by both norms"
                )
                raise Fail(
                    f"composition_score: expected {expected:.4f} for shapes "
                    f"{tuple(left.shape)} @ {tuple(right.shape)}, got {value:.4f}. Hint: {hint}"
                )
        return f"matches norms from singular values on {len(cases)} pairs ({within(1e-4)})"

    run_check("06.5 composition_score", body, hidden=hidden)


def check_bos_attention(fn, model, hidden: bool = False):
    """fn(patterns [layer n_heads pos pos]) -> Float[Tensor, "layer n_heads"]."""

    rng = hidden_rng("06.6", hidden)

    def body():
        prompt = random_prompt(rng) if rng is not None else _case(hidden)[0]
        _, _, cache = _truth(model, prompt)
        n_layers = model.cfg.n_layers
        scores = torch.stack(
            [cache[f"blocks.{layer}.attn.hook_attn_scores"][0] for layer in range(n_layers)]
        )  # layer n_heads query key
        patterns = torch.stack(
            [cache[f"blocks.{layer}.attn.hook_pattern"][0] for layer in range(n_layers)]
        )
        truth = scores.softmax(-1)[:, :, 1:, 0].mean(-1)
        got = call(fn, patterns.clone(), name="bos_attention")
        if isinstance(got, torch.Tensor) and got.shape == truth.shape:
            if torch.allclose(got, patterns[:, :, :, 0].mean(-1), atol=1e-5):
                raise Fail(
                    "bos_attention: leave out query position 0: it can only attend to "
                    "itself, so it always puts 1.0 on position 0 and inflates the mean."
                )
            if torch.allclose(got, patterns[:, :, 0, 1:].mean(-1), atol=1e-5):
                raise Fail(
                    "bos_attention: attention *to* position 0 is the key axis (last): "
                    "patterns[:, :, 1:, 0]."
                )
        compare_tensors(
            got,
            truth,
            what="mean attention to position 0",
            atol=1e-5,
            dims="layer n_heads",
            hint="patterns[layer, head, query, key]: take key 0 for queries 1..pos-1 and average",
        )
        return f"matches softmax(hook_attn_scores) over {n_layers} layers ({within(1e-5)})"

    run_check("06.6 bos_attention", body, hidden=hidden)
