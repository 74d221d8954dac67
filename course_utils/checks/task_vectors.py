"""Checks for lesson 05 (in-context learning task vectors).

The truth comes from the Hugging Face model underneath the bridge, not from the course's solution:
``hidden_states[L]`` of ``model.original_model`` is the residual stream entering block L, and a
PyTorch pre-hook on ``original_model.model.layers[L]`` patches it without any TransformerLens hook.
"""

from __future__ import annotations

from . import Fail, call, compare_tensors, expect, hidden_rng, run_check, within

ICL_PROMPTS = ["a b c -> c\nd e f -> f\ng h i ->", "hot -> cold\nbig -> small\nup -> down\nfast ->"]
HIDDEN_ICL_PROMPTS = [
    "cat -> CAT\nb -> B\nstar -> STAR\nq ->",
    "France -> Paris\nJapan -> Tokyo\nItaly ->",
]
ATOL = 1e-4  # float32 sums over 576 dimensions and a few prompts


def _random_upper_pairs(model, rng, k: int) -> list[tuple[str, str]]:
    """``k`` different pairs of the course's to_upper task whose answer is one token (a hidden
    test's inputs while grading: a word or letter and the same in capitals)."""
    from ..task_vectors import load_task, single_token_pairs

    return rng.sample(single_token_pairs(model, load_task("to_upper").pairs), k)


def _random_upper_prompt(model, rng, n_examples: int) -> str:
    """A drawn to_upper prompt: ``n_examples`` demonstrations and a query."""
    pairs = _random_upper_pairs(model, rng, n_examples + 1)
    return "".join(f"{x} -> {y}\n" for x, y in pairs[:-1]) + f"{pairs[-1][0]} ->"


def _tokens(model, prompt):
    return model.to_tokens(prompt)


def _hf_last_states(model, prompt):
    """Residual stream entering every block (and after the final norm) at the last token, from
    HF."""
    import torch

    with torch.no_grad():
        out = model.original_model(_tokens(model, prompt), output_hidden_states=True)
    return [h[0, -1] for h in out.hidden_states]


def _hf_patched_logits(model, tokens, layer, vector, position, mode):
    """Logits at ``position`` of a one-prompt batch, with ``vector`` written into the residual
    stream entering block ``layer`` at ``position`` by a plain PyTorch pre-hook on the HF decoder
    layer."""
    import torch

    block = model.original_model.model.layers[layer]

    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden = hidden.clone()
        if mode == "replace":
            hidden[:, position] = vector
        else:
            hidden[:, position] = hidden[:, position] + vector
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with torch.no_grad():
            return model.original_model(tokens).logits[0, position]
    finally:
        handle.remove()


def check_task_vector(fn, model, hidden: bool = False):
    """fn(model, prompts, layer) -> Float[Tensor, "d_model"]: mean last-token residual entering
    ``layer``."""
    import torch

    prompts = HIDDEN_ICL_PROMPTS if hidden else ICL_PROMPTS
    cases = [([prompts[0]], 4), (prompts, 15)] if not hidden else [([prompts[1]], 9), (prompts, 20)]
    rng = hidden_rng("05.1", hidden)
    if rng is not None:  # drawn to_upper prompts and layers
        prompts = [_random_upper_prompt(model, rng, rng.randint(2, 4)) for _ in range(2)]
        n_layers = model.cfg.n_layers
        cases = [([prompts[0]], rng.randrange(n_layers)), (prompts, rng.randrange(n_layers))]

    def body():
        for case_prompts, layer in cases:
            states = [_hf_last_states(model, p) for p in case_prompts]
            truth = torch.stack([s[layer] for s in states]).mean(0)
            got = call(fn, model, list(case_prompts), layer, name="task_vector")
            if (
                isinstance(got, torch.Tensor)
                and got.shape == truth.shape
                and len(case_prompts) == 1
            ):
                if layer + 1 < len(states[0]) and torch.allclose(
                    got, states[0][layer + 1], atol=ATOL
                ):
                    raise Fail(
                        f"layer {layer}: you returned the state *leaving* block {layer}. Hint: θ "
                        "at layer L is "
                        f"blocks.{{L}}.hook_resid_pre, the stream entering block L."
                    )
            if isinstance(got, torch.Tensor) and got.shape == (1, *truth.shape):
                raise Fail(
                    f"wrong shape {tuple(got.shape)}: return one vector [d_model], averaged over "
                    "the prompts "
                    "(drop the batch dimension)."
                )
            label = (
                "one prompt" if len(case_prompts) == 1 else f"mean over {len(case_prompts)} prompts"
            )
            compare_tensors(
                got,
                truth,
                what=f"θ at layer {layer} ({label})",
                atol=ATOL,
                dims="d_model",
                hint="take blocks.{layer}.hook_resid_pre at the LAST position of each prompt "
                "(the arrow), "
                "then average over prompts",
            )
        return (
            "matches the HF model's hidden_states at the last token, single and averaged "
            f"({within(ATOL)})"
        )

    run_check("05.1 task_vector", body, hidden=hidden)


def check_patch_hook(fn, model, hidden: bool = False):
    """fn(vector, positions, mode) -> hook(resid, hook) writing ``vector`` at ``positions[b]`` of
    row b."""
    import torch

    seed, layer, rows = (1, 12, [5, 2, 0]) if hidden else (0, 6, [5, 2, 0])
    prompt, donor_prompt = ("cold ->" if hidden else "hot ->"), ICL_PROMPTS[1]
    rng = hidden_rng("05.2", hidden)
    if rng is not None:
        seed, layer = rng.randrange(10_000), rng.randrange(model.cfg.n_layers)
        rows = [rng.randrange(6) for _ in rows]  # the position written in each row
        prompt, donor_prompt = (
            f"{_random_upper_pairs(model, rng, 1)[0][0]} ->",
            _random_upper_prompt(model, rng, 3),
        )

    def body():
        gen = torch.Generator().manual_seed(seed)
        resid = torch.randn(3, 6, 8, generator=gen)
        vector = torch.randn(8, generator=gen)
        positions = torch.tensor(rows)
        for mode in ("replace", "add"):
            expected = resid.clone()
            for row, pos in enumerate(positions.tolist()):
                expected[row, pos] = vector if mode == "replace" else resid[row, pos] + vector
            hook = call(fn, vector, positions, mode, name="make_patch_hook")
            expect(
                callable(hook),
                f"make_patch_hook should return a function (the hook), got {type(hook).__name__}",
            )
            got = call(hook, resid.clone(), None, name=f"your {mode} hook")
            if isinstance(got, torch.Tensor) and got.shape == resid.shape and mode == "replace":
                changed = (got != resid).any(-1)
                if bool(changed.all()):
                    raise Fail(
                        "replace hook: every position changed; write the vector only at "
                        "positions[b] of row b "
                        "(index with rows = torch.arange(batch) and cols = positions)"
                    )
            compare_tensors(
                got,
                expected,
                what=f"{mode} hook on a [batch=3, pos=6, d_model=8] tensor",
                atol=1e-6,
                dims="batch pos d_model",
                hint="row b changes only at positions[b]; 'replace' sets it to the vector, 'add' "
                "adds the vector",
            )
        # in the real model: same logits as a plain PyTorch pre-hook on the HF decoder layer
        tokens = model.to_tokens(prompt)
        donor = _hf_last_states(model, donor_prompt)[layer]
        last = tokens.shape[1] - 1
        for mode in ("replace", "add"):
            hook = call(fn, donor, torch.tensor([last]), mode, name="make_patch_hook")
            with torch.no_grad():
                logits = call(
                    model.run_with_hooks,
                    tokens,
                    fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", hook)],
                    name="model.run_with_hooks with your hook",
                )[0, last]
            truth = _hf_patched_logits(model, tokens, layer, donor, last, mode)
            compare_tensors(
                logits,
                truth,
                what=f"logits with θ {mode}d at layer {layer}",
                atol=1e-3,
                dims="d_vocab",
            )
        return (
            "writes only positions[b] in each row, and in the model gives the same logits as a "
            "PyTorch "
            f"pre-hook on the HF layer ({within(1e-3)})"
        )

    run_check("05.2 make_patch_hook", body, hidden=hidden)


# (query, answer) pairs of the to_upper task; patched θ gets some of them right and not all
UPPER = [("cat", "CAT"), ("b", "B"), ("star", "STAR"), ("q", "Q"), ("m", "M"), ("key", "KEY")]
HIDDEN_UPPER = [("d", "D"), ("car", "CAR"), ("w", "W"), ("table", "TABLE"), ("h", "H"), ("k", "K")]
THETA_PROMPTS = [
    "z -> Z\nmap -> MAP\ne -> E\nt -> T\nmoon -> MOON\nx ->",
    "fish -> FISH\nr -> R\nbox -> BOX\ng -> G\na -> A\np ->",
]


def patched_accuracy_truth(model, queries, answers, theta, layer, mode="replace") -> float:
    """The accuracy of ``query ->`` prompts with θ patched at the last token, from the HF model."""
    correct = 0
    for query, answer in zip(queries, answers, strict=False):
        tokens = model.to_tokens(f"{query} ->")
        logits = _hf_patched_logits(model, tokens, layer, theta, tokens.shape[1] - 1, mode)
        target = model.tokenizer.encode(" " + answer, add_special_tokens=False)[0]
        correct += int(int(logits.argmax()) == target)
    return correct / len(queries)


def check_task_vector_accuracy(fn, model, hidden: bool = False):
    """fn(model, queries, answers, theta, layer) -> float: top-1 accuracy with θ patched
    (replace)."""
    import torch

    pairs, layers = (HIDDEN_UPPER, (22, 5)) if hidden else (UPPER, (21, 3))
    theta_prompts = THETA_PROMPTS
    rng = hidden_rng("05.3", hidden)
    if rng is not None:  # drawn queries, θ prompts, a late and an early layer
        pairs = _random_upper_pairs(model, rng, len(HIDDEN_UPPER))
        theta_prompts = [_random_upper_prompt(model, rng, 5) for _ in THETA_PROMPTS]
        half = model.cfg.n_layers // 2
        layers = (rng.randrange(half, model.cfg.n_layers), rng.randrange(half))

    def body():
        queries, answers = [q for q, _ in pairs], [a for _, a in pairs]
        seen = []
        for layer in layers:
            theta = torch.stack([_hf_last_states(model, p)[layer] for p in theta_prompts]).mean(0)
            truth = patched_accuracy_truth(model, queries, answers, theta, layer)
            got = call(fn, model, queries, answers, theta, layer, name="task_vector_accuracy")
            if isinstance(got, torch.Tensor) and got.numel() == 1:
                got = got.item()
            expect(
                isinstance(got, (float, int)),
                f"return the accuracy as a float, got {type(got).__name__}",
            )
            if abs(got - truth) > 1e-6:
                raise Fail(
                    f"θ at layer {layer} on {len(queries)} queries: expected accuracy {truth:.3f}, "
                    f"got {got:.3f}. "
                    "Hint: prompt is f'{query} ->' (BOS prepended), replace the state entering "
                    "block "
                    "`layer` at the last position, and compare the top-1 token with ' ' + answer."
                )
            seen.append(truth)
        return (
            f"accuracy matches an independent HF computation at layers {layers} "
            f"({', '.join(f'{a:.2f}' for a in seen)})"
        )

    run_check("05.3 task_vector_accuracy", body, hidden=hidden)
