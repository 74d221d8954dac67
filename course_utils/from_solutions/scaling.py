"""GENERATED from solutions/07_scaling_up.ipynb by `make notebooks` — do not edit.

The cells marked `#| export scaling` there are the only text of this code: edit them,
then run `make notebooks` (python -m course_utils.exercises generate).
"""

import torch

__all__ = ["to_tokens", "logit_lens", "patch_layer"]


# solutions/07_scaling_up.ipynb, cell 11 (ex07_to_tokens)
def to_tokens(tokenizer, prompt: str) -> torch.Tensor:
    """prompt -> Int[Tensor, "batch pos"] with batch = 1: the BOS id, then the prompt's ids."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    if tokenizer.bos_token_id is None:
        raise ValueError("this tokenizer has no BOS token; set tokenizer.bos_token first")
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    return torch.tensor([[tokenizer.bos_token_id, *ids]], dtype=torch.long)


# solutions/07_scaling_up.ipynb, cell 14 (ex07_logit_lens)
def logit_lens(
    model, tokens: torch.Tensor, pos: int = -1, remote=False, scan: bool = False
) -> torch.Tensor:
    """tokens: Int[Tensor, "batch pos"] -> Float[Tensor, "layer d_vocab"], layer = 0..n_layers.

    remote, scan: where the trace runs (sections 6-8): here, serialised as for NDIF
    (remote="local"), on NDIF (remote=True) or as a scan of a weightless skeleton (scan=True)."""
    if scan:
        tracer = model.scan(tokens)
    elif remote:
        tracer = model.trace(tokens, remote=remote)
    else:
        tracer = model.trace(tokens)
    n_layers = model.config.num_hidden_layers
    with tracer:
        rows = list().save()
        streams = [model.model.embed_tokens.output]
        streams += [model.model.layers[L].output for L in range(n_layers)]
        for resid in streams:
            logits = model.lm_head(model.model.norm(resid[0, pos]))
            rows.append(logits.float().log_softmax(-1).save())  # float32 whatever the model's dtype
    return torch.stack(list(rows))


# solutions/07_scaling_up.ipynb, cell 19 (ex07_patch_layer)
def patch_layer(
    model,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    layer: int,
    positions: list,
    answer: int,
    foil: int,
) -> torch.Tensor:
    """clean, corrupted: Int[Tensor, "batch pos"] (batch 1, same length) -> Float[Tensor, "pos"],
    one logit difference per patched position."""
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} prompts "
            "must have the same number of tokens"
        )
    batch = torch.cat([clean, corrupted.expand(len(positions), -1)])
    rows, cols = torch.arange(1, len(positions) + 1), torch.tensor(positions)
    with model.trace(batch):
        resid = model.model.layers[layer].output
        resid[rows, cols] = resid[0, cols]
        logits = model.lm_head.output[1:, -1]
        diff = (logits[:, answer] - logits[:, foil]).save()
    return diff
