"""Checks for lesson 07 (the same experiments in nnsight).

The truth is TransformerLens: the bridge of lessons 01-05 (``load_model()``), a separate copy of the
same weights, run with its own hooks (``run_with_cache``, ``run_with_hooks``). Nothing here uses
nnsight, so a check cannot agree with a learner's nnsight code by sharing its mistakes.
"""

from __future__ import annotations

import torch

from . import (
    Fail,
    call,
    compare_tensors,
    expect,
    hidden_rng,
    random_fact_pair,
    random_prompt,
    run_check,
    within,
)

PROMPTS = ["The Eiffel Tower is located in the city of", "The capital of Italy is"]
HIDDEN_PROMPTS = ["The Colosseum is located in the city of", "Big Ben is located in the city of"]
ATOL = 1e-4  # float32: the bridge and the plain HF model run the same weights in a different order
RTOL = 1e-5  # log-probabilities reach -40: allow their last float32 digits


def _prompts(hidden: bool, exercise: str) -> list[str]:
    """The check's prompts; while grading, the hidden test's are drawn."""
    rng = hidden_rng(exercise, hidden)
    if rng is None:
        return HIDDEN_PROMPTS if hidden else PROMPTS
    return [random_prompt(rng) for _ in HIDDEN_PROMPTS]


def check_to_tokens(fn, tl_model, tokenizer, hidden: bool = False):
    """fn(tokenizer, prompt) -> Int[Tensor, "batch pos"], the same ids as ``model.to_tokens``."""

    def body():
        for prompt in _prompts(hidden, "07.1"):
            truth = tl_model.to_tokens(prompt).cpu()
            got = call(fn, tokenizer, prompt, name="to_tokens")
            expect(
                isinstance(got, torch.Tensor),
                f"expected a torch.Tensor of ids, got {type(got).__name__}",
            )
            got = got.cpu()
            if got.shape == (truth.shape[1] - 1,) or got.shape == (1, truth.shape[1] - 1):
                raise Fail(
                    f"{got.shape[-1]} tokens for {prompt!r}, the course's convention gives "
                    f"{truth.shape[1]}: position 0 must be {tokenizer.bos_token!r}. Hint: "
                    "the plain "
                    "tokenizer does not add it; put tokenizer.bos_token_id first yourself."
                )
            if got.shape == (truth.shape[1],):
                raise Fail(
                    "wrong shape: keep the batch dimension, [1, pos] (e.g. torch.tensor([ids]))."
                )
            if got.shape == truth.shape and got[0, 0] == truth[0, 0] and got[0, 1] != truth[0, 1]:
                raise Fail(
                    "BOS is first but the prompt's ids differ: encode it with "
                    "add_special_tokens=False, so nothing else is inserted."
                )
            expect(got.dtype == torch.long, f"ids must be torch.long, got {got.dtype}")
            expect(
                torch.equal(got, truth),
                f"ids for {prompt!r} differ from model.to_tokens: got "
                f"{got.tolist()}, expected {truth.tolist()}",
            )
        return "the same ids as TransformerLens's model.to_tokens, <|endoftext|> first"

    run_check("07.1 to_tokens", body, hidden=hidden)


def check_logit_lens(fn, model, tl_model, hidden: bool = False):
    """fn(model, tokens, pos) -> Float[Tensor, "layer d_vocab"], log-probs after 0..n_layers
    blocks."""
    from ..residual_stream import logit_lens as tl_logit_lens
    from ..scaling import to_tokens

    n_layers = tl_model.cfg.n_layers
    rng = hidden_rng("07.2", hidden)

    def body():
        for prompt in _prompts(hidden, "07.2"):
            tokens = to_tokens(model.tokenizer, prompt)
            with torch.no_grad():
                logits, cache = tl_model.run_with_cache(tokens.to(tl_model.cfg.device))
            positions = (-1, 4) if not hidden else (-1, 2)
            if rng is not None:
                positions = (-1, rng.randrange(1, tokens.shape[1] - 1))
            for pos in positions:
                truth = tl_logit_lens(tl_model, cache, pos)[:, 0].float().cpu()
                got = call(fn, model, tokens, pos, name="logit_lens")
                expect(
                    isinstance(got, torch.Tensor),
                    f"expected a torch.Tensor, got {type(got).__name__}",
                )
                if tuple(got.shape) == (n_layers, truth.shape[-1]):
                    raise Fail(
                        f"{n_layers} rows: include row 0, the embedding "
                        "(model.model.embed_tokens.output), then the output of every layer."
                    )
                got = got.detach().float().cpu()
                expect(
                    tuple(got.shape) == tuple(truth.shape),
                    f"expected shape {tuple(truth.shape)} [layer d_vocab] (0..{n_layers} "
                    "blocks), got "
                    f"{tuple(got.shape)}",
                )
                expect(
                    bool((got <= 1e-4).all()),
                    "values above 0: return log-probabilities (log_softmax), not logits or "
                    "probabilities",
                )
                with torch.no_grad():
                    raw = cache[f"blocks.{n_layers // 2}.hook_resid_post"][0, pos] @ tl_model.W_U
                if (got[n_layers // 2 + 1] - raw.log_softmax(-1).cpu()).abs().max() < 1e-3:
                    raise Fail(
                        "your rows skip the final norm: apply model.model.norm to the stream "
                        "before model.lm_head, as the model does to its last layer."
                    )
                compare_tensors(
                    got[-1],
                    logits[0, pos].log_softmax(-1).float().cpu(),
                    atol=ATOL,
                    rtol=RTOL,
                    what=f"last row at pos {pos} (the model's output)",
                    dims="d_vocab",
                    hint=f"the last row reads layers[{n_layers - 1}].output",
                )
                compare_tensors(
                    got,
                    truth,
                    what=f"logit lens of {prompt!r} at pos {pos}",
                    atol=ATOL,
                    rtol=RTOL,
                    dims="layer d_vocab",
                    hint="row L reads layers[L-1].output (row 0: embed_tokens.output) at pos, "
                    "through model.model.norm and model.lm_head, then log_softmax",
                )
        return f"every row matches TransformerLens's logit lens ({within(ATOL, RTOL)})"

    run_check("07.2 logit_lens", body, hidden=hidden)


def _tl_patched_diff(
    tl_model,
    clean,
    corrupted,
    layer,
    positions,
    answer,
    foil,
    hook="hook_resid_post",
    reverse=False,
):
    """Logit difference at the last position of the corrupted run with the clean ``hook`` of
    ``layer`` written in at each of ``positions`` (one run per position), from TransformerLens."""
    source, target = (corrupted, clean) if reverse else (clean, corrupted)
    name = f"blocks.{layer}.{hook}"
    with torch.no_grad():
        _, cache = tl_model.run_with_cache(source, names_filter=lambda n: n == name)
        out = []
        for pos in positions:

            def patch(resid, hook, pos=pos):
                resid = resid.clone()
                resid[:, pos] = cache[name][:, pos]
                return resid

            logits = tl_model.run_with_hooks(target, fwd_hooks=[(name, patch)])[0, -1]
            out.append(logits[answer] - logits[foil])
    return torch.stack(out).float().cpu()


PAIRS = [
    (
        "The Eiffel Tower is located in the city of",
        "The Colosseum is located in the city of",
        " Paris",
        " Rome",
    )
]
HIDDEN_PAIRS = [("The capital of France is", "The capital of Italy is", " Paris", " Rome")]


def check_patch_layer(fn, model, tl_model, hidden: bool = False):
    """fn(model, clean, corrupted, layer, positions, answer, foil) -> Float[Tensor, " pos"]."""
    from ..predictions import answer_token_id as token_id
    from ..scaling import to_tokens

    tok = model.tokenizer
    pairs = HIDDEN_PAIRS if hidden else PAIRS
    rng = hidden_rng("07.3", hidden)
    if rng is not None:  # two known facts of one relation and length: patching needs an answer
        clean_fact, corrupt_fact = random_fact_pair(rng, lambda p: to_tokens(tok, p).shape[1])
        pairs = [
            (
                clean_fact["prompt"],
                corrupt_fact["prompt"],
                clean_fact["answer"],
                corrupt_fact["answer"],
            )
        ]

    def body():
        for clean_p, corrupt_p, answer, foil in pairs:
            clean, corrupted = to_tokens(tok, clean_p), to_tokens(tok, corrupt_p)
            a, f = token_id(tok, answer), token_id(tok, foil)
            positions = [3, clean.shape[1] - 1] if not hidden else [4, clean.shape[1] - 1]
            layers = (2, 20) if not hidden else (5, 25)
            if rng is not None:
                positions = [rng.randrange(1, clean.shape[1] - 1), clean.shape[1] - 1]
                layers = tuple(sorted(rng.sample(range(tl_model.cfg.n_layers), 2)))
            for layer in layers:
                truth = _tl_patched_diff(tl_model, clean, corrupted, layer, positions, a, f)
                got = call(fn, model, clean, corrupted, layer, positions, a, f, name="patch_layer")
                expect(
                    isinstance(got, torch.Tensor),
                    f"expected a torch.Tensor, got {type(got).__name__}",
                )
                got = got.detach().float().cpu().flatten() if got.numel() == len(positions) else got
                if isinstance(got, torch.Tensor) and got.numel() == len(positions) + 1:
                    raise Fail(
                        f"{got.numel()} values for {len(positions)} positions: drop row 0 "
                        "(the clean "
                        "run) and return only the patched rows."
                    )
                if got.shape == truth.shape and not torch.allclose(got, truth, atol=ATOL):
                    reverse = _tl_patched_diff(
                        tl_model, clean, corrupted, layer, positions, a, f, reverse=True
                    )
                    if torch.allclose(got, reverse, atol=1e-3) and not torch.allclose(
                        got, truth, atol=1e-3
                    ):
                        raise Fail(
                            "you patched corrupted into clean: write the CLEAN run's "
                            "activation into "
                            "the CORRUPTED prompt's rows."
                        )
                    pre = _tl_patched_diff(
                        tl_model, clean, corrupted, layer, positions, a, f, hook="hook_resid_pre"
                    )
                    if torch.allclose(got, pre, atol=1e-3) and not torch.allclose(
                        got, truth, atol=1e-3
                    ):
                        raise Fail(
                            f"you patched the stream entering layer {layer} (.input, "
                            "hook_resid_pre); "
                            "patch layers[layer].output (hook_resid_post)."
                        )
                compare_tensors(
                    got,
                    truth,
                    what=f"logit diff, layer {layer}, positions {positions}",
                    atol=ATOL,
                    dims="pos",
                    hint="batch = [clean, corrupted × len(positions)]; in row 1+i set "
                    "layers[layer].output at "
                    "positions[i] to row 0's value; return logit(answer) - logit(foil) "
                    "at the last "
                    "position of rows 1...",
                )
        return f"matches TransformerLens run_with_hooks on hook_resid_post ({within(ATOL)})"

    run_check("07.3 patch_layer", body, hidden=hidden)
