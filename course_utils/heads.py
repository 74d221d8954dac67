"""Attention heads (lesson 06): who writes the answer into the residual stream.

Lesson 01 treated each attention layer as one term of the residual stream. Here the stream is a
*communication channel* between heads (Elhage et al. 2021, "A Mathematical Framework for Transformer
Circuits"): each head reads the stream through its QK circuit (where to look) and its OV circuit
(what to copy), and adds one vector per position back.

SmolLM2-135M uses grouped-query attention: 9 query heads per layer share 3 key/value heads (query
head ``h`` reads key/value head ``h // 3``). A "head" below is a *query* head: it has its own
attention pattern and its own slice of ``W_O``, so its output ``z_h @ W_O[h]`` is its own, even
though its values are shared with two other heads.

The exercises of lesson 06 (per-head attribution, head patching, OV read-out, composition scores,
attention to position 0) live in the lesson's solution cells. This module holds only what the lesson
*imports*: a metric, head labels, the folded circuit matrices, and plots that return figures.

Shapes use the course's dimension names: ``batch pos d_model d_vocab n_heads d_head layer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor


def logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"], answer_id: int, foil_id: int
) -> Float[Tensor, " batch"]:
    """logit(answer) − logit(foil) at the last position, one value per batch row.

    A difference against a named foil cancels every shift shared by all tokens (the final norm's
    mean, a bias common to the vocabulary): what is left is evidence for one answer *over* another.
    """
    if logits.ndim != 3:
        raise ValueError(f"expected logits [batch pos d_vocab], got shape {tuple(logits.shape)}")
    return logits[:, -1, answer_id] - logits[:, -1, foil_id]


def head_label(layer: int, head: int) -> str:
    """``"L23H4"``: layer 23, query head 4."""
    return f"L{layer}H{head}"


def top_heads(
    values: Float[Tensor, "layer n_heads"], k: int = 5, by_abs: bool = True
) -> list[tuple[int, int, float]]:
    """The ``k`` (layer, head, value) entries with the largest |value| (or value), largest first."""
    if values.ndim != 2:
        raise ValueError(f"expected [layer n_heads], got shape {tuple(values.shape)}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    flat = values.detach().flatten()
    order = (flat.abs() if by_abs else flat).argsort(descending=True)[:k]
    n_heads = values.shape[1]
    return [(int(i) // n_heads, int(i) % n_heads, float(flat[i])) for i in order]


# ---------------------------------------------------------------------------------------------
# Circuit matrices (Elhage et al. 2021), with this model's RMSNorm gains folded in
# ---------------------------------------------------------------------------------------------


def kv_head(model, head: int) -> int:
    """The key/value head that query head ``head`` reads (grouped-query attention)."""
    group = model.cfg.n_heads // model.W_K.shape[1]
    return head // group


def ov_matrix(model, layer: int, head: int) -> Float[Tensor, "d_model d_model"]:
    """W_OV = diag(ln1.w) W_V[kv] W_O[head]: what the head writes for each normalised direction it
    reads (row-vector convention, ``x @ W_OV``). The RMSNorm gain of the layer's ``ln1`` is folded
    in; its division by the stream's scale is not (it depends on the input)."""
    gain = model.blocks[layer].ln1.w
    return (gain[:, None] * model.W_V[layer, kv_head(model, head)]) @ model.W_O[layer, head]


def qk_matrix(model, layer: int, head: int) -> Float[Tensor, "d_model d_model"]:
    """W_QK = diag(ln1.w) W_Q[head] W_K[kv]^T diag(ln1.w): the bilinear form of attention scores
    ``x_q @ W_QK @ x_k`` *without* rotary embeddings and without the 1/sqrt(d_head) factor."""
    gain = model.blocks[layer].ln1.w
    w_q = gain[:, None] * model.W_Q[layer, head]
    w_k = gain[:, None] * model.W_K[layer, kv_head(model, head)]
    return w_q @ w_k.T


# ---------------------------------------------------------------------------------------------
# Plots (return the figure)
# ---------------------------------------------------------------------------------------------


def plot_head_grid(
    values: Float[Tensor, "layer n_heads"],
    title: str = "",
    label: str = "",
    ax=None,
    vmax: float | None = None,
):
    """A [layer × head] heatmap with a diverging colour map centred at 0 (red +, blue −)."""
    import matplotlib.pyplot as plt

    data = values.detach().float().cpu()
    if data.ndim != 2:
        raise ValueError(f"expected [layer n_heads], got shape {tuple(data.shape)}")
    limit = float(vmax) if vmax is not None else max(float(data.abs().max()), 1e-9)
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.2, 6.5))
    else:
        fig = ax.figure
    image = ax.imshow(
        data.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", origin="lower"
    )
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(data.shape[1]))
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    return fig


def plot_attention_rows(
    rows: Float[Tensor, "n_rows pos"],
    str_tokens: Sequence[str],
    row_labels: Sequence[str],
    title: str = "",
):
    """Attention of a few heads (rows) over the key positions of one query (columns), 0 to 1."""
    import matplotlib.pyplot as plt

    data = rows.detach().float().cpu()
    if data.ndim != 2 or data.shape[1] != len(str_tokens) or data.shape[0] != len(row_labels):
        raise ValueError(
            f"expected [{len(row_labels)} rows, {len(str_tokens)} positions], "
            f"got {tuple(data.shape)}"
        )
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(str_tokens), 0.9 + 0.45 * len(row_labels)))
    image = ax.imshow(data.numpy(), cmap="Greens", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(str_tokens)))
    ax.set_xticklabels([repr(t) for t in str_tokens], rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels)
    for r in range(data.shape[0]):
        for c in range(data.shape[1]):
            ax.text(
                c,
                r,
                f"{data[r, c]:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if data[r, c] > 0.6 else "black",
            )
    ax.set_xlabel("key position (what the head reads)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="attention", shrink=0.8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Head patching at the last position, fast (lesson 04's engine, one query position)
# ---------------------------------------------------------------------------------------------


def _last_z(w, run, layer: int) -> Float[Tensor, "batch n_heads d_head"]:
    """Each query head's z at the last position of ``run`` (a ``fast_forward.Run``) in ``layer``."""
    from .fast_forward import rms_norm, rotate_half

    p = w.blocks[layer]
    x = run.resid[layer][:, -1:]  # [batch, 1, d_model]
    batch = x.shape[0]
    n_pos = run.keys[layer].shape[2]
    cos, sin = w.rotary(torch.arange(n_pos - 1, n_pos, device=x.device))
    h = rms_norm(x, p["input_layernorm.weight"], w.eps)
    q = torch.nn.functional.linear(h, p["self_attn.q_proj.weight"])
    q = q.view(batch, 1, w.n_heads, w.d_head)
    q = (q * cos[:, None] + rotate_half(q) * sin[:, None])[:, 0]  # [batch, n_heads, d_head]
    group = w.n_heads // w.n_kv
    keys = run.keys[layer].repeat_interleave(group, dim=1)  # [batch, n_heads, pos, d_head]
    values = run.values[layer].repeat_interleave(group, dim=1)
    scores = torch.einsum("bhd,bhkd->bhk", q, keys) * w.d_head**-0.5
    return torch.einsum("bhk,bhkd->bhd", scores.softmax(-1), values)


@torch.no_grad()
def head_patching(
    model,
    base_tokens,
    source_tokens,
    answer_id: int,
    foil_id: int,
    layers=None,
    progress: bool = False,
) -> Float[Tensor, "layer n_heads"]:
    """logit(answer) − logit(foil) of the *base* prompt after replacing one head's z at the last
    position by its value in the *source* prompt, for every (layer, head); one entry per patch.

    Denoising: base = corrupted, source = clean. Noising: base = clean, source = corrupted.
    Both prompts must have the same number of tokens (batch 1).

    The same numbers as 9-copy batches through the bridge with a ``hook_z`` patch (lesson 06's
    exercise; tested to 1e-3), but computed the way lesson 04's fast engine does: a patch at the
    last position changes nothing at earlier positions, so each patched run reuses the base run's
    keys and values there and computes one position only, from the patched layer on.

    ``layers``: the layers to patch (default all); rows of other layers are NaN. The matrix products
    here are tiny (9 rows), so they run on one thread: on a busy CPU, two threads spent most of
    their time waiting for each other (measured 150 s instead of 7 s for the full sweep).
    """
    from .fast_forward import Pass, Weights, full_run

    if base_tokens.shape != source_tokens.shape or base_tokens.shape[0] != 1:
        raise ValueError(
            "base and source need the same shape [1, pos]; got "
            f"{tuple(base_tokens.shape)} and {tuple(source_tokens.shape)}"
        )
    w = Weights(model)
    base = full_run(w, w.embed[base_tokens])
    source = full_run(w, w.embed[source_tokens])
    n_pos = base_tokens.shape[1]
    last = Pass.over(w, n_pos - 1, n_pos, base_tokens.device)
    direction = w.unembed[answer_id] - w.unembed[foil_id]  # [d_model]
    out = torch.full((w.n_layers, w.n_heads), float("nan"))
    layers = range(w.n_layers) if layers is None else [int(layer) for layer in layers]
    if any(not 0 <= layer < w.n_layers for layer in layers):
        raise ValueError(f"layers must lie in 0..{w.n_layers - 1}, got {list(layers)}")
    if progress:
        from tqdm.auto import tqdm

        layers = tqdm(layers, desc="head patching", unit="layer")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for layer in layers:
            out[layer] = _patch_layer(w, base, source, layer, last, direction)
    finally:
        torch.set_num_threads(threads)
    return out


def _patch_layer(w, base, source, layer: int, last, direction) -> Float[Tensor, " n_heads"]:
    """The logit difference after patching each head of ``layer`` in turn (one row per head);
    ``last``: a ``fast_forward.Pass`` over the last position."""
    from .fast_forward import block, mlp, rms_norm

    p = w.blocks[layer]
    w_o = p["self_attn.o_proj.weight"].T.reshape(w.n_heads, w.d_head, -1)  # n_heads d_head d_model
    delta_z = _last_z(w, source, layer)[0] - _last_z(w, base, layer)[0]  # [n_heads d_head]
    delta = torch.einsum("hd,hdm->hm", delta_z, w_o)  # one row per patched head
    mid = base.resid[layer][0, -1] + base.attn_out[layer][0, -1] + delta  # [n_heads d_model]
    x = (mid + mlp(w, layer, mid))[:, None]  # [n_heads, 1, d_model]
    for later in range(layer + 1, w.n_layers):
        k_prefix = base.keys[later][:, :, :-1].expand(w.n_heads, -1, -1, -1)
        v_prefix = base.values[later][:, :, :-1].expand(w.n_heads, -1, -1, -1)
        x = block(last, later, x, (k_prefix, v_prefix))[0]
    return rms_norm(x[:, 0], w.norm, w.eps) @ direction
