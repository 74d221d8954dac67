"""Checks for lesson 01 (the residual stream, equation by equation).

Each check runs the learner's function on fixed prompts and compares it with the model's own forward
pass (``run_with_cache`` activations, ``model(tokens)``, the bridge's per-head ``hook_result``) or
with an invariant (the components sum to the stream; the attributions sum to the logit). The truth
for a prompt is computed once per model and kept, so a notebook's checks share a few forward passes.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from . import Fail, call, compare_tensors, expect, hidden_rng, random_prompt, run_check, within

PROMPTS = ["The Eiffel Tower is located in the city of", "The capital of Japan is"]
HIDDEN_PROMPTS = [
    "The Colosseum is located in the city of",
    "Albert Einstein developed the theory of",
]
ANSWERS = {
    PROMPTS[0]: " Paris",
    PROMPTS[1]: " Tokyo",
    HIDDEN_PROMPTS[0]: " Rome",
    HIDDEN_PROMPTS[1]: " relativity",
}
LAYERS = (0, 13, 29)  # first, middle and last block (clipped to the model's depth)
FOILS = {
    PROMPTS[0]: " Rome",
    PROMPTS[1]: " Beijing",
    HIDDEN_PROMPTS[0]: " Paris",
    HIDDEN_PROMPTS[1]: " gravity",
}
ZEROED = {
    False: ("blocks.23.hook_attn_out", None),
    True: ("blocks.20.hook_mlp_out", "blocks.0.hook_attn_out"),
}

# (atol, rtol) each check holds a learner's function to. The notebook holds every later use of that
# function's output to the same tolerance, so code that passes a check is never failed further on
# by a stricter comparison (a hand-written RMSNorm passes 01.5 but is not bit-for-bit the model's).
TOLERANCE = {
    "embed": (1e-6, 0.0),
    "attention_z": (1e-5, 1e-5),
    "head_outputs": (1e-4, 1e-5),
    "block_forward": (1e-3, 1e-5),
    "forward_from_parts": (1e-3, 1e-5),
    "decompose_resid": (1e-2, 1e-6),
    "direct_logit_attribution": (1e-3, 1e-4),
    "logit_lens": (1e-4, 1e-5),
    "logit_diff_dla": (1e-3, 1e-4),
}

_HOOK_SUFFIXES = (
    "hook_embed",
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "attn.hook_z",
    "attn.hook_v",
    "attn.hook_pattern",
)
_TRUTH: dict = {}


def _names(name: str) -> bool:
    return name.endswith(_HOOK_SUFFIXES) or name == "ln_final.hook_scale"


def _truth(model, prompt: str):
    """(tokens, logits, cache) of ``model`` on ``prompt``, computed once per model and prompt."""
    key = (id(model), bool(getattr(model, "compatibility_mode", False)), prompt)
    if key not in _TRUTH:
        tokens = model.to_tokens(prompt)
        with torch.no_grad():
            logits, cache = model.run_with_cache(tokens, names_filter=_names)
        _TRUTH[key] = (tokens, logits, cache)
    return _TRUTH[key]


def _prompts(hidden: bool) -> list[str]:
    """The check's prompts. While grading, the hidden ones are drawn (one draw for the whole
    lesson, so its checks share their forward passes)."""
    rng = hidden_rng("01", hidden)
    if rng is None:
        return HIDDEN_PROMPTS if hidden else PROMPTS
    return [random_prompt(rng) for _ in HIDDEN_PROMPTS]


def _layers(model, rng=None) -> list[int]:
    """Layers to compare at: first, middle and last, or (``rng``: a hidden test while grading)
    as many drawn at random."""
    if rng is not None:
        return sorted(rng.sample(range(model.cfg.n_layers), len(LAYERS)))
    return sorted({min(layer, model.cfg.n_layers - 1) for layer in LAYERS})


def _answer_and_foil(model, prompt: str, logits) -> tuple[int, int]:
    """Token ids of the prompt's answer and foil; for a drawn prompt, the model's own first and
    second choice at the last position."""
    from ..predictions import answer_token_id

    if prompt in ANSWERS:
        return answer_token_id(model, ANSWERS[prompt]), answer_token_id(model, FOILS[prompt])
    first, second = logits[0, -1].topk(2).indices.tolist()
    return first, second


@contextmanager
def _forward_disabled(model):
    """Make ``model(...)`` raise inside the block, so a function that must use the parts cannot
    return the model's own output."""

    def refuse(*args, **kwargs):
        raise Fail("call the model's parts (W_E, blocks, ln_final, W_U), not model(tokens) itself")

    model.forward = refuse
    try:
        yield
    finally:
        del model.forward


# ---------------------------------------------------------------------------------------------


def check_embed(fn, model, hidden: bool = False):
    """fn(model, tokens) -> Float[Tensor, "batch pos d_model"], the token embeddings."""

    atol, rtol = TOLERANCE["embed"]

    def body():
        for prompt in _prompts(hidden):
            tokens, _, cache = _truth(model, prompt)
            got = call(fn, model, tokens, name="embed")
            if isinstance(got, torch.Tensor) and got.shape == cache["hook_embed"].shape[1:]:
                raise Fail(
                    "embed: keep the batch dimension: expected [batch pos d_model], "
                    f"got {tuple(got.shape)}"
                )
            compare_tensors(
                got,
                cache["hook_embed"],
                what=f"embedding of {prompt!r}",
                atol=atol,
                rtol=rtol,
                dims="batch pos d_model",
                hint="x_0 = W_E[t]: index the rows of model.W_E [d_vocab d_model] with the "
                "token ids",
            )
        return f"matches hook_embed on {len(_prompts(hidden))} prompts ({within(atol, rtol)})"

    run_check("01.1 embed", body, hidden=hidden)


def check_attention_z(fn, model, hidden: bool = False):
    """fn(pattern, v) -> Float[Tensor, "batch pos n_heads d_head"], attention-weighted values per
    query head."""

    atol, rtol = TOLERANCE["attention_z"]
    layers = _layers(model, hidden_rng("01.2", hidden))

    def body():
        for prompt in _prompts(hidden):
            _, _, cache = _truth(model, prompt)
            for layer in layers:
                pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
                v = cache[f"blocks.{layer}.attn.hook_v"]
                truth = cache[f"blocks.{layer}.attn.hook_z"]
                got = call(fn, pattern, v, name="attention_z")
                if isinstance(got, torch.Tensor) and got.shape == truth.shape:
                    n_heads, n_kv = pattern.shape[1], v.shape[2]
                    tiled = torch.einsum(
                        "bhqk,bkhd->bqhd", pattern, v.repeat(1, 1, n_heads // n_kv, 1)
                    )
                    if (
                        n_heads != n_kv
                        and torch.allclose(got, tiled, atol=atol, rtol=rtol)
                        and not torch.allclose(got, truth, atol=atol, rtol=rtol)
                    ):
                        raise Fail(
                            "your KV heads are tiled (0,1,2,0,1,2,...): grouped-query attention "
                            "gives "
                            "each KV head to consecutive query heads (0,0,0,1,1,1,...). "
                            "Hint: v.repeat_interleave(n_heads // n_kv_heads, dim=2)"
                        )
                compare_tensors(
                    got,
                    truth,
                    what=f"z at layer {layer} for {prompt!r}",
                    atol=atol,
                    rtol=rtol,
                    dims="batch pos n_heads d_head",
                    hint="repeat each of the n_kv_heads value heads for its group of query "
                    "heads, then "
                    "z[b,q,h] = sum_k pattern[b,h,q,k] * v[b,k,h]",
                )
        return f"matches attn.hook_z at layers {layers} ({within(atol, rtol)})"

    run_check("01.2 attention_z", body, hidden=hidden)


def check_head_outputs(fn, model, hidden: bool = False):
    """fn(model, z, layer) -> Float[Tensor, "batch pos n_heads d_model"], each head's write to the
    stream."""

    atol, rtol = TOLERANCE["head_outputs"]
    layers = _layers(model, hidden_rng("01.3", hidden))

    def body():
        for prompt in _prompts(hidden):
            tokens, _, cache = _truth(model, prompt)
            previous = bool(getattr(model.cfg, "use_attn_result", False))
            model.set_use_attn_result(True)  # the bridge then computes and hooks each head's output
            try:
                with torch.no_grad():
                    _, results = model.run_with_cache(
                        tokens, names_filter=lambda n: n.endswith("attn.hook_result")
                    )
            finally:
                model.set_use_attn_result(previous)
            for layer in layers:
                z = cache[f"blocks.{layer}.attn.hook_z"]
                got = call(fn, model, z, layer, name="head_outputs")
                truth = results[f"blocks.{layer}.attn.hook_result"]
                if isinstance(got, torch.Tensor) and got.shape == truth.shape[:2] + truth.shape[3:]:
                    raise Fail(
                        "head_outputs: keep the heads separate: expected [batch pos n_heads "
                        "d_model], got "
                        f"{tuple(got.shape)} (did you sum over heads? that is hook_attn_out)"
                    )
                compare_tensors(
                    got,
                    truth,
                    what=f"per-head outputs at layer {layer}",
                    atol=atol,
                    rtol=rtol,
                    dims="batch pos n_heads d_model",
                    hint="multiply z[b,p,h] [d_head] by model.W_O[layer, h] [d_head d_model] "
                    "for each head h",
                )
                total = got.sum(dim=2)
                compare_tensors(
                    total,
                    cache[f"blocks.{layer}.hook_attn_out"],
                    what=f"sum over heads at layer {layer}",
                    atol=atol,
                    rtol=rtol,
                    dims="batch pos d_model",
                )
        return (
            f"matches the bridge's hook_result, and the heads sum to hook_attn_out "
            f"({within(atol, rtol)})"
        )

    run_check("01.3 head_outputs", body, hidden=hidden)


def check_block_forward(fn, model, hidden: bool = False):
    """fn(block, resid_pre, position_embeddings) -> (resid_mid, resid_post)."""
    from ..residual_stream import position_embeddings

    atol, rtol = TOLERANCE["block_forward"]
    layers = _layers(model, hidden_rng("01.4", hidden))

    def body():
        for prompt in _prompts(hidden):
            tokens, _, cache = _truth(model, prompt)
            rotary = position_embeddings(model, tokens)
            for layer in layers:
                resid_pre = cache[f"blocks.{layer}.hook_resid_pre"]
                with torch.no_grad():
                    got = call(fn, model.blocks[layer], resid_pre, rotary, name="block_forward")
                expect(
                    isinstance(got, tuple) and len(got) == 2,
                    "block_forward should return a tuple (resid_mid, resid_post), got "
                    f"{type(got).__name__}",
                )
                mid, post = got
                compare_tensors(
                    mid,
                    cache[f"blocks.{layer}.hook_resid_mid"],
                    what=f"resid_mid at layer {layer}",
                    atol=atol,
                    rtol=rtol,
                    dims="batch pos d_model",
                    hint="resid_mid = resid_pre + attention output; the attention reads "
                    "block.ln1(resid_pre), "
                    "and block.attn(...) returns (attn_out, pattern)",
                )
                compare_tensors(
                    post,
                    cache[f"blocks.{layer}.hook_resid_post"],
                    what=f"resid_post at layer {layer}",
                    atol=atol,
                    rtol=rtol,
                    dims="batch pos d_model",
                    hint="resid_post = resid_mid + block.mlp(block.ln2(resid_mid)); the norm "
                    "feeds the MLP, "
                    "it is not applied to the stream",
                )
        return f"resid_mid and resid_post match the cache at layers {layers} ({within(atol, rtol)})"

    run_check("01.4 block_forward", body, hidden=hidden)


def check_forward_from_parts(fn, model, hidden: bool = False):
    """fn(model, tokens) -> Float[Tensor, "batch pos d_vocab"], the logits, built from the model's
    parts."""

    atol, rtol = TOLERANCE["forward_from_parts"]

    def body():
        for prompt in _prompts(hidden):
            tokens, logits, _ = _truth(model, prompt)
            with _forward_disabled(model), torch.no_grad():
                got = call(fn, model, tokens, name="forward_from_parts")
            compare_tensors(
                got,
                logits,
                what=f"logits for {prompt!r}",
                atol=atol,
                rtol=rtol,
                dims="batch pos d_vocab",
                hint="embed -> every block in model.blocks -> model.ln_final -> @ model.W_U + "
                "model.b_U",
            )
        return f"reproduces model(tokens) on {len(_prompts(hidden))} prompts ({within(atol, rtol)})"

    run_check("01.5 forward_from_parts", body, hidden=hidden)


def check_decompose_resid(fn, model, hidden: bool = False):
    """fn(cache, n_layers) -> (Float[Tensor, "component batch pos d_model"], list of labels)."""
    from ..residual_stream import component_labels

    atol, rtol = TOLERANCE["decompose_resid"]

    def body():
        n_layers = model.cfg.n_layers
        for prompt in _prompts(hidden):
            _, _, cache = _truth(model, prompt)
            got = call(fn, cache, n_layers, name="decompose_resid")
            expect(
                isinstance(got, tuple) and len(got) == 2,
                f"decompose_resid should return (components, labels), got {type(got).__name__}",
            )
            components, labels = got
            want_labels = component_labels(n_layers)
            expect(
                list(labels) == want_labels,
                f"labels should be {want_labels[:4]} ... {want_labels[-1]!r} ({len(want_labels)} "
                "in the order "
                f"they are added), got {list(labels)[:4]} ... ({len(labels)})",
            )
            final = cache[f"blocks.{n_layers - 1}.hook_resid_post"]
            is_tensor = isinstance(components, torch.Tensor)
            got = tuple(components.shape) if is_tensor else type(components).__name__
            expect(
                is_tensor and components.shape == (len(want_labels), *final.shape),
                f"components should have shape {(len(want_labels), *final.shape)} [component batch "
                f"pos d_model], got {got}",
            )
            compare_tensors(
                components.sum(0),
                final,
                what="sum of the components",
                atol=atol,
                rtol=rtol,
                dims="batch pos d_model",
                hint="every term added to the stream must appear exactly once: embed, then "
                "attn_out and mlp_out of each layer",
            )
            # the running sums are the stream entering each block and the stream between its
            # sub-layers
            for layer in range(n_layers):
                for count, hook in (
                    (2 * layer + 1, "hook_resid_pre"),
                    (2 * layer + 2, "hook_resid_mid"),
                ):
                    compare_tensors(
                        components[:count].sum(0),
                        cache[f"blocks.{layer}.{hook}"],
                        what=f"sum of the first {count} components (blocks.{layer}.{hook})",
                        atol=atol,
                        rtol=rtol,
                        dims="batch pos d_model",
                        hint="keep the order embed, attn_0, mlp_0, attn_1, mlp_1, ...",
                    )
        return (
            f"the running sums equal resid_pre and resid_mid of every layer ({within(atol, rtol)})"
        )

    run_check("01.6 decompose_resid", body, hidden=hidden)


def check_direct_logit_attribution(fn, model, hidden: bool = False):
    """fn(model, components, final_scale, token_id) -> Float[Tensor, "component batch pos"]."""
    from ..residual_stream import decompose_resid

    atol, rtol = TOLERANCE["direct_logit_attribution"]

    def body():
        for prompt in _prompts(hidden):
            _, logits, cache = _truth(model, prompt)
            components, _ = decompose_resid(cache, model.cfg.n_layers)
            scale = cache["ln_final.hook_scale"]
            answer_id, _ = _answer_and_foil(model, prompt, logits)
            for token_id in (answer_id, int(logits[0, -1].argmin())):
                got = call(fn, model, components, scale, token_id, name="direct_logit_attribution")
                expect(
                    isinstance(got, torch.Tensor) and got.shape == components.shape[:-1],
                    f"expected shape {tuple(components.shape[:-1])} [component batch pos], got "
                    f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}",
                )
                # independent path: the bridge's unembedding module on each normalised component
                with torch.no_grad():
                    per_comp = model.unembed(
                        components[:, :, -1] / scale[:, -1] * model.ln_final.w
                    )[..., token_id]
                per_comp = per_comp - model.b_U[token_id]
                compare_tensors(
                    got[:, :, -1],
                    per_comp,
                    what=f"attribution to token {token_id} at the last position",
                    atol=atol,
                    rtol=rtol,
                    dims="component batch",
                    hint="divide each component by the final norm's scale, multiply by "
                    "model.ln_final.w, "
                    "then take the dot product with model.W_U[:, token_id]",
                )
                compare_tensors(
                    got.sum(0) + model.b_U[token_id],
                    logits[..., token_id],
                    what="attributions + b_U vs the logit",
                    atol=atol,
                    rtol=rtol,
                    dims="batch pos",
                )
        return (
            f"per-component values match, and they sum to the model's logit ({within(atol, rtol)})"
        )

    run_check("01.7 direct_logit_attribution", body, hidden=hidden)


def check_logit_lens(fn, model, hidden: bool = False):
    """fn(model, cache, pos) -> Float[Tensor, "layer batch d_vocab"], log-probabilities after
    0..n_layers blocks."""

    atol, rtol = TOLERANCE["logit_lens"]
    rng = hidden_rng("01.8", hidden)
    layers = _layers(model, rng)

    def body():
        n_layers = model.cfg.n_layers
        for prompt in _prompts(hidden):
            tokens, logits, cache = _truth(model, prompt)
            positions = (-1, 3) if rng is None else (-1, rng.randrange(1, tokens.shape[1] - 1))
            for pos in positions:
                got = call(fn, model, cache, pos, name="logit_lens")
                want_shape = (n_layers + 1, tokens.shape[0], logits.shape[-1])
                expect(
                    isinstance(got, torch.Tensor) and tuple(got.shape) == want_shape,
                    f"expected shape {want_shape} [layer batch d_vocab] (the stream after 0, 1, "
                    f"..., {n_layers} "
                    "blocks), got "
                    f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}",
                )
                expect(
                    bool((got <= 1e-4).all()),
                    "values above 0: return log-probabilities (log_softmax), not probabilities or "
                    "logits",
                )
                compare_tensors(
                    got[-1],
                    logits[:, pos].log_softmax(-1),
                    what=f"last row at pos {pos} (the model's own output)",
                    atol=atol,
                    rtol=rtol,
                    dims="batch d_vocab",
                    hint=f"the last row reads blocks.{n_layers - 1}.hook_resid_post",
                )
                for layer in layers:
                    with torch.no_grad():
                        want = model.unembed(
                            model.ln_final(cache[f"blocks.{layer}.hook_resid_pre"][:, pos])
                        )
                    compare_tensors(
                        got[layer],
                        want.log_softmax(-1),
                        what=f"row {layer} at pos {pos}",
                        atol=atol,
                        rtol=rtol,
                        dims="batch d_vocab",
                        hint=f"row {layer} reads blocks.{layer}.hook_resid_pre through "
                        "model.ln_final (with the "
                        "vector's own scale), then W_U and b_U",
                    )
        return (
            f"rows match the final norm + unembedding of each layer's stream ({within(atol, rtol)})"
        )

    run_check("01.8 logit_lens", body, hidden=hidden)


def _zero_last_position(activation, hook):
    activation = activation.clone()
    activation[:, -1] = 0
    return activation


def check_logit_diff_dla(fn, model, hidden: bool = False):
    """fn(model, tokens, answer_id, foil_id, zeroed) -> Float[Tensor, " component"]: each
    component's direct attribution to logit(answer) - logit(foil) at the last position, in a forward
    pass where the hook ``zeroed`` (or none, if ``zeroed`` is None) is zeroed at the last
    position."""
    from ..residual_stream import component_labels

    atol, rtol = TOLERANCE["logit_diff_dla"]
    zeroed_hooks = ZEROED[hidden]
    rng = hidden_rng("01.9", hidden)
    if rng is not None:  # a drawn MLP and a drawn attention output
        zeroed_hooks = tuple(
            f"blocks.{rng.randrange(model.cfg.n_layers)}.hook_{kind}_out"
            for kind in ("mlp", "attn")
        )

    def truth(tokens, answer_id, foil_id, zeroed):
        hooks = [] if zeroed is None else [(zeroed, _zero_last_position)]
        with torch.no_grad():
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
            with model.hooks(fwd_hooks=hooks):
                _, cache = model.run_with_cache(tokens, names_filter=_names)
        n_layers = model.cfg.n_layers
        names = ["hook_embed"] + [
            f"blocks.{L}.hook_{kind}_out" for L in range(n_layers) for kind in ("attn", "mlp")
        ]
        components = torch.stack([cache[name][0, -1] for name in names])  # [component d_model]
        # independent path: the bridge's unembedding module on each normalised component
        normalised = components / cache["ln_final.hook_scale"][0, -1] * model.ln_final.w
        per_comp = model.unembed(normalised)
        per_comp = per_comp - model.b_U
        diff = (
            logits[0, -1, answer_id]
            - logits[0, -1, foil_id]
            - (model.b_U[answer_id] - model.b_U[foil_id])
        )
        return per_comp[:, answer_id] - per_comp[:, foil_id], diff, names

    def body():
        for prompt in _prompts(hidden):
            tokens, logits, _ = _truth(model, prompt)
            answer_id, foil_id = _answer_and_foil(model, prompt, logits)
            answer, foil = model.tokenizer.decode([answer_id]), model.tokenizer.decode([foil_id])
            for zeroed in zeroed_hooks:
                with torch.no_grad():
                    got = call(fn, model, tokens, answer_id, foil_id, zeroed, name="logit_diff_dla")
                n = len(component_labels(model.cfg.n_layers))
                expect(
                    isinstance(got, torch.Tensor) and tuple(got.shape) == (n,),
                    f"expected shape ({n},) [component] (the last position of batch row 0), got "
                    f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}",
                )
                want, logit_diff, names = truth(tokens, answer_id, foil_id, zeroed)
                what = (
                    "the clean run"
                    if zeroed is None
                    else f"the run without {zeroed} at the last position"
                )
                if zeroed is not None and abs(
                    float(got.sum()) - float(logit_diff)
                ) > atol + rtol * abs(float(logit_diff)):
                    raise Fail(
                        f"in {what}, your attributions sum to {float(got.sum()):.3f} but the "
                        "model's logit "
                        f"difference is {float(logit_diff):.3f}: zero the hook at the last "
                        "position only, "
                        "and divide by the final scale of *that* run (its own ln_final.hook_scale)"
                    )
                if zeroed is not None:
                    expect(
                        abs(float(got[names.index(zeroed)])) < atol,
                        f"{zeroed} is zeroed at the last position, so its attribution must be 0; "
                        f"got {float(got[names.index(zeroed)]):.3f}",
                    )
                compare_tensors(
                    got,
                    want,
                    what=f"attributions to logit({answer!r}) - logit({foil!r}) in {what}",
                    atol=atol,
                    rtol=rtol,
                    dims="component",
                    hint="run the model with the zeroing hook (model.hooks(fwd_hooks=...) "
                    "around run_with_cache), "
                    "then decompose_resid and direct_logit_attribution for the answer minus "
                    "the same for the foil",
                )
                compare_tensors(
                    got.sum(),
                    logit_diff,
                    what=f"sum of attributions vs the logit difference in {what}",
                    atol=atol,
                    rtol=rtol,
                    dims="",
                )
        return (
            "per-component values match the model's unembedding, with and without the zeroed "
            "hook, and "
            f"sum to its logit difference ({within(atol, rtol)})"
        )

    run_check("01.9 logit_diff_dla", body, hidden=hidden)
