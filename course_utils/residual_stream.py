"""The residual stream as a running sum (lesson 01).

A decoder-only transformer keeps one vector per position, the *residual stream*, and every sub-layer
*adds* its output to it::

    x_0        = W_E[t]                                  hook_embed == blocks.0.hook_resid_pre
    resid_mid  = resid_pre + sum_h head_h(ln1(resid_pre))    blocks.L.hook_resid_mid
    resid_post = resid_mid + mlp(ln2(resid_mid))             blocks.L.hook_resid_post
    logits     = ln_final(resid_post[-1]) @ W_U + b_U

Lesson 01 checks each line on SmolLM2-135M-Instruct (a TransformerLens 4.x ``TransformerBridge``)
and has the learner write the functions this module offers to the rest of the course. Their only
text is the lesson's solution cells (marked ``#| export residual_stream``); this module imports
them from the generated ``course_utils.from_solutions.residual_stream``:

* ``embed``, ``attention_z``, ``head_outputs``, ``block_forward``, ``forward_from_parts``: the
  forward pass rebuilt from the model's parts (``position_embeddings``, the rotary tables, lives in
  ``course_utils.model``);
* ``decompose_resid``: the final residual as a sum of ``embed`` + every ``attn_out`` + every
  ``mlp_out``;
* ``direct_logit_attribution`` and ``logit_lens``.

Written here: ``unembed``, ``component_labels`` and ``resid_stack``, and the plots
``plot_direct_logit_attribution``, ``plot_logit_lens`` and ``logit_lens_explorer`` (an ipywidgets
layer slider with a static fallback). Ranks of an answer: ``course_utils.predictions.answer_rank``.

Shapes use the course's dimension names: ``batch pos d_model d_vocab n_heads d_head layer``;
``component`` indexes the terms of the decomposition.

Everything reads the bridge's *unprocessed* weights (the default): the RMSNorm gains are still in
``ln1``/``ln2``/``ln_final``, not folded into the matrices that follow them. On a bridge after
``enable_compatibility_mode()`` the gains are 1 and folded into the weights, so the same code still
gives the model's logits (and the same log-probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from .from_solutions.residual_stream import (
    attention_z,
    block_forward,
    decompose_resid,
    direct_logit_attribution,
    embed,
    forward_from_parts,
    head_outputs,
    logit_lens,
)
from .model import position_embeddings

__all__ = [
    "attention_z",
    "block_forward",
    "component_labels",
    "decompose_resid",
    "direct_logit_attribution",
    "embed",
    "forward_from_parts",
    "head_outputs",
    "logit_lens",
    "logit_lens_explorer",
    "plot_direct_logit_attribution",
    "plot_logit_lens",
    "plot_stream_norms",
    "position_embeddings",
    "resid_stack",
    "unembed",
]


def unembed(model, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """logits = ln_final(resid) @ W_U + b_U (the final RMSNorm uses each vector's own scale)."""
    return model.ln_final(resid) @ model.W_U + model.b_U


def component_labels(n_layers: int) -> list[str]:
    """``["embed", "attn_0", "mlp_0", "attn_1", ..., "mlp_{n_layers-1}"]``: the order they are
    added."""
    labels = ["embed"]
    for layer in range(n_layers):
        labels += [f"attn_{layer}", f"mlp_{layer}"]
    return labels


def resid_stack(cache, n_layers: int) -> Float[Tensor, "layer batch pos d_model"]:
    """The stream after 0, 1, ..., n_layers blocks: ``resid_pre`` of each layer, then the final
    ``resid_post`` (``n_layers + 1`` rows)."""
    rows = [cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(n_layers)]
    rows.append(cache[f"blocks.{n_layers - 1}.hook_resid_post"])
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------
# Plots (each returns a matplotlib figure)
# ---------------------------------------------------------------------------------------------

_COLOURS = {"embed": "tab:gray", "attn": "tab:blue", "mlp": "tab:orange"}


def _kind(label: str) -> str:
    return label.split("_")[0]


def _floats(values) -> list[float]:
    """Plain floats from a tensor or sequence (detached: plotting never needs gradients)."""
    if isinstance(values, Tensor):
        return values.detach().float().cpu().flatten().tolist()
    return [float(v) for v in values]


def plot_direct_logit_attribution(
    dla: Float[Tensor, " component"], labels: Sequence[str], title: str = ""
):
    """Bar chart of per-component direct logit attribution, coloured by kind (embed / attn /
    mlp)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    values = _floats(dla)
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} values but {len(labels)} labels")
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.bar(
        range(len(values)), values, color=[_COLOURS.get(_kind(lab), "tab:green") for lab in labels]
    )
    ax.axhline(0, color="black", linewidth=0.6)
    # one tick per five layers, at the layer's attention bar ("L0", "L5", ...); embed is the grey
    # bar
    ticks = [i for i, lab in enumerate(labels) if lab.startswith("attn_") and int(lab[5:]) % 5 == 0]
    ax.set_xticks(ticks, [f"L{labels[i][5:]}" for i in ticks])
    ax.set_xlabel("component: embed, then attn_L and mlp_L for each layer L")
    ax.set_ylabel("direct logit attribution")
    ax.set_title(title or "Direct contribution of each component to the answer's logit")
    ax.legend(handles=[Patch(color=c, label=k) for k, c in _COLOURS.items()], loc="upper left")
    fig.tight_layout()
    plt.close(fig)  # the caller displays it; avoids a second copy in notebooks
    return fig


def plot_logit_lens(
    p_answer: Float[Tensor, " layer"],
    top_tokens: Sequence[str],
    answer: str = "answer",
    p_top: Float[Tensor, " layer"] | None = None,
    title: str = "",
):
    """p(answer) after each number of blocks, with the top-1 token written above every point."""
    import matplotlib.pyplot as plt

    xs = list(range(len(p_answer)))
    fig, ax = plt.subplots(figsize=(11, 3.8))
    ax.plot(xs, _floats(p_answer), marker="o", label=f"p({answer!r})")
    if p_top is not None:
        ax.plot(
            xs, _floats(p_top), marker=".", linestyle="--", color="tab:gray", label="p(top-1 token)"
        )
    for x, token in zip(xs, top_tokens, strict=False):
        ax.annotate(
            repr(token),
            (x, 1.02),
            rotation=70,
            fontsize=7,
            ha="left",
            va="bottom",
            xycoords=("data", "axes fraction"),
        )
    ax.set_ylim(0, 1)
    ax.set_xlabel("blocks applied (0 = embedding only)")
    ax.set_ylabel("probability")
    ax.set_title(
        title or "Logit lens: the stream read through the final norm and unembedding", pad=60
    )
    ax.legend(loc="center left")
    fig.tight_layout()
    plt.close(fig)
    return fig


def plot_stream_norms(
    norms: Float[Tensor, " layer"],
    normed_norms: Float[Tensor, " layer"] | None = None,
    title: str = "",
):
    """Norm of the residual stream after each number of blocks (and, optionally, of its normalised
    copy)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(_floats(norms), marker="o", label="residual stream ‖x‖")
    if normed_norms is not None:
        ax.plot(
            _floats(normed_norms), marker=".", label="RMSNorm(x) / gain (what a sub-layer reads)"
        )
    ax.set_xlabel("blocks applied")
    ax.set_ylabel("L2 norm")
    ax.set_title(title or "The stream grows; the normalised copy does not")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)
    return fig


def logit_lens_explorer(
    log_probs: Float[Tensor, "layer d_vocab"], tokenizer, k: int = 8, static: bool | None = None
):
    """A layer slider showing the top-k tokens of the logit lens after the chosen number of blocks.

    Returns an ipywidgets ``VBox`` (slider + table) when ipywidgets is installed and ``static`` is
    not True; otherwise (no ipywidgets, or ``static=True`` for a render without a kernel, such as
    GitHub) a matplotlib figure with the top tokens after every block, so nothing is lost.
    The table is an HTML widget updated in place, so the slider works without a display round-trip.
    """
    if not static:
        try:
            import ipywidgets as widgets
        except ImportError:
            static = True
    if static:
        return _logit_lens_grid(log_probs, tokenizer, k=min(k, 5))

    n = log_probs.shape[0]
    slider = widgets.IntSlider(
        value=n - 1, min=0, max=n - 1, description="blocks", continuous_update=False
    )
    table = widgets.HTML(value=_top_k_html(log_probs[n - 1], tokenizer, k, n - 1))

    def show(change):
        table.value = _top_k_html(log_probs[change["new"]], tokenizer, k, change["new"])

    slider.observe(show, names="value")
    return widgets.VBox([slider, table])


def _top_k_html(log_probs: Float[Tensor, " d_vocab"], tokenizer, k: int, layer: int) -> str:
    import html

    values, ids = log_probs.detach().exp().topk(k)
    rows = []
    for value, token_id in zip(values.tolist(), ids.tolist(), strict=False):
        token = html.escape(repr(tokenizer.decode([token_id])))
        bar = f'<div style="background:#4c72b0;height:10px;width:{round(200 * value)}px"></div>'
        rows.append(f"<tr><td><code>{token}</code></td><td>{value:.2f}</td><td>{bar}</td></tr>")
    return f"<b>after {layer} blocks</b><table>{''.join(rows)}</table>"


def _logit_lens_grid(log_probs: Float[Tensor, "layer d_vocab"], tokenizer, k: int = 5):
    import matplotlib.pyplot as plt

    probs = log_probs.exp()
    values, ids = probs.topk(k, dim=-1)  # [layer k]
    n = probs.shape[0]
    fig, ax = plt.subplots(figsize=(1.3 * k + 1.5, 0.28 * n + 1))
    ax.imshow(values.detach().float().cpu().numpy(), aspect="auto", cmap="Blues", vmin=0, vmax=1)
    for layer in range(n):
        for rank in range(k):
            ax.text(
                rank,
                layer,
                tokenizer.decode([int(ids[layer, rank])]).strip()
                or repr(tokenizer.decode([int(ids[layer, rank])])),
                ha="center",
                va="center",
                fontsize=7,
            )
    ax.set_xticks(range(k), [f"top {r + 1}" for r in range(k)])
    ax.set_yticks(range(n))
    ax.set_ylabel("blocks applied")
    ax.set_title("Logit lens: top tokens after each block (colour = probability)")
    fig.tight_layout()
    plt.close(fig)
    return fig
