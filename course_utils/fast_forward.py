"""A fast forward pass (lesson 04's engine): the Llama block in plain torch, on the model's weights.

Patching experiments run the same prompt again and again with one small change: a restored state
(causal tracing, lesson 04), a patched head (lesson 06), a vector written at the last token (lesson
05). Through the ``TransformerBridge`` every such run is a full forward pass, from the embeddings to
the logits, at every position. Most of that work cannot change: a change entering block ``l`` at
position ``t`` leaves every block before ``l`` untouched, and with causal attention it leaves every
position before ``t`` untouched as well. This module computes only what can change:

* ``full_run`` runs a prompt once and keeps every state (``Run``): the residual entering each block,
  each block's keys and values, its attention and MLP outputs;
* ``block`` runs one decoder block for the positions ``start..`` alone, reading the keys and values
  of earlier positions from such a run (``prefix``), optionally setting a sub-layer's output at the
  first computed position (a ``Patch``), optionally computing only the last position (the final
  block, whose other positions nobody reads);
* ``final_logits`` applies the final norm and the unembedding.

It exists for speed only; it teaches nothing the bridge does not show. Lesson 01 rebuilds the
block by hand from the bridge's parts; this is the same arithmetic, written once on the weights of
``model.original_model`` (the Hugging Face model inside the bridge) so that a run can start at any
layer and position.

Why not the bridge's ``start_at_layer``? Profiling showed it saves nothing: TransformerBridge feeds
the given residual to the Hugging Face model as ``inputs_embeds``, the HF forward runs every block
from 0, and block L swaps the residual back in (``BlockBridge._maybe_inject_start_residual``), so
blocks 0..L-1 still run.

The numbers are checked against the bridge's own: ``tests/test_fast_forward.py`` compares the logits
and every block's residual and sub-layer outputs with the bridge's hooks, a run restarted at a
later position (keys and values from ``prefix``) with the full run, and a patched run with the
bridge running the same patch as a hook; ``tests/test_tracing.py``,
``test_heads.py`` and ``test_task_vectors.py`` hold the experiments built on it equal to their
hook-based versions.

Only Llama-style models are supported (RMSNorm, SiLU-gated MLP, grouped-query attention, default
rotary embeddings); ``Weights`` refuses anything else with a message.

Shapes use the course's dimension names; ``q`` is the number of positions a call computes, ``n_kv``
the number of key/value heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def _strip(name: str) -> str:
    return name.replace("_original_component.", "")


class Weights:
    """Plain tensors of a Llama-style model (the bridge's HF model), read once per experiment.

    ``blocks[layer]`` maps Hugging Face parameter names (``"self_attn.q_proj.weight"``...) to
    tensors; ``norm``, ``unembed`` and ``embed`` are the final norm's weight, the unembedding
    [d_vocab, d_model] and the embedding [d_vocab, d_model].
    """

    def __init__(self, model):
        hf = model.original_model
        cfg = hf.config
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise NotImplementedError(
                "the fast engine supports Llama-style (SiLU-gated) MLPs only; run the experiment "
                "through the bridge's hooks instead (causal tracing: trace_reference)"
            )
        rope = getattr(cfg, "rope_parameters", None) or {
            "rope_theta": getattr(cfg, "rope_theta", 10000.0),
            "rope_type": "default",
        }
        if rope.get("rope_type", "default") != "default":
            raise NotImplementedError(
                "the fast engine supports default rotary embeddings only; run the experiment "
                "through the bridge's hooks instead (causal tracing: trace_reference)"
            )
        self.inv_freq = 1.0 / (
            rope["rope_theta"] ** (torch.arange(0, self.d_head, 2, dtype=torch.float) / self.d_head)
        )
        self.blocks = [
            {_strip(n): p.detach() for n, p in layer.named_parameters()}
            for layer in hf.model.layers
        ]
        self.norm = dict((_strip(n), p.detach()) for n, p in hf.model.norm.named_parameters())[
            "weight"
        ]
        self.unembed = hf.get_output_embeddings().weight.detach()
        self.embed = hf.get_input_embeddings().weight.detach()

    def rotary(
        self, positions: Tensor
    ) -> tuple[Float[Tensor, "q d_head"], Float[Tensor, "q d_head"]]:
        """cos, sin: [pos, d_head], computed exactly as transformers' LlamaRotaryEmbedding does."""
        freqs = positions[:, None].float() * self.inv_freq.to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()


@dataclass(frozen=True)
class Pass:
    """What every block of one pass shares: the weights and the rotary angles of the positions it
    computes (``start..stop-1``; ``cos``/``sin``: [q, d_head])."""

    weights: Weights
    cos: Tensor
    sin: Tensor

    @classmethod
    def over(cls, weights: Weights, start: int, stop: int, device=None) -> Pass:
        """A pass computing positions ``start..stop-1`` of a prompt."""
        return cls(weights, *weights.rotary(torch.arange(start, stop, device=device)))


@dataclass(frozen=True)
class Patch:
    """Set a sub-layer's output at the first computed position of some batch rows to ``value``.

    site: ``"attn"`` (the attention output) or ``"mlp"`` (the MLP output); rows: a boolean mask or
    indices of the rows; value: [d_model] or one row per patched row.
    """

    site: str
    rows: Tensor
    value: Tensor

    def __post_init__(self):
        if self.site not in ("attn", "mlp"):
            raise ValueError(f"a patch's site is 'attn' or 'mlp', got {self.site!r}")


def rms_norm(x: Float[Tensor, "... d_model"], weight, eps: float) -> Float[Tensor, "... d_model"]:
    """RMSNorm: ``weight * x / sqrt(mean(x²) + eps)`` over the last dimension."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x: Float[Tensor, "... d_head"]) -> Float[Tensor, "... d_head"]:
    """The rotary embedding's partner vector: ``(-x2, x1)`` for ``x = (x1, x2)``."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def mlp(
    weights: Weights, layer: int, resid_mid: Float[Tensor, "... d_model"]
) -> Float[Tensor, "... d_model"]:
    """The SiLU-gated MLP of block ``layer`` on ``resid_mid`` (its own pre-norm included)."""
    p = weights.blocks[layer]
    h = rms_norm(resid_mid, p["post_attention_layernorm.weight"], weights.eps)
    return F.linear(
        F.silu(F.linear(h, p["mlp.gate_proj.weight"])) * F.linear(h, p["mlp.up_proj.weight"]),
        p["mlp.down_proj.weight"],
    )


def block(
    state: Pass,
    layer: int,
    x: Float[Tensor, "batch q d_model"],
    prefix: tuple[Tensor, Tensor] | None = None,
    patch: Patch | None = None,
    last_only: bool = False,
):
    """Decoder block ``layer`` for the positions ``start..start+q-1`` of ``state``.

    x: the residual entering the block at those positions. prefix: ``(keys, values)`` of positions
    0..start-1, each [batch, n_kv, start, d_head], read by the attention (None when start is 0).
    patch: sets the attention or MLP output at the first computed position of some rows (a
    restore). last_only: the caller reads the output at the last position only (the final block),
    so queries, attention output and MLP run there alone; a patch then applies only when the first
    computed position is the last one.

    Returns ``(x, keys, values, attn_out, mlp_out)``: the block's output [batch, q, d_model] and its
    keys and values [batch, n_kv, q, d_head] of the computed positions, and its sub-layer outputs.
    """
    w, cos, sin = state.weights, state.cos, state.sin
    p = w.blocks[layer]
    batch, q_len, _ = x.shape
    h = rms_norm(x, p["input_layernorm.weight"], w.eps)
    k = (
        F.linear(h, p["self_attn.k_proj.weight"])
        .view(batch, q_len, w.n_kv, w.d_head)
        .transpose(1, 2)
    )
    v = (
        F.linear(h, p["self_attn.v_proj.weight"])
        .view(batch, q_len, w.n_kv, w.d_head)
        .transpose(1, 2)
    )
    k = k * cos + rotate_half(k) * sin
    keys, values = (
        (k, v) if prefix is None else (torch.cat([prefix[0], k], 2), torch.cat([prefix[1], v], 2))
    )
    if last_only:
        if q_len > 1:
            patch = None  # the patched position is not the one we read
        x, h, cos, sin, q_len = x[:, -1:], h[:, -1:], cos[-1:], sin[-1:], 1
    q = (
        F.linear(h, p["self_attn.q_proj.weight"])
        .view(batch, q_len, w.n_heads, w.d_head)
        .transpose(1, 2)
    )
    q = q * cos + rotate_half(q) * sin
    # grouped-query attention without copying keys: [batch, n_kv, group * q, d_head]
    group = w.n_heads // w.n_kv
    qg = q.reshape(batch, w.n_kv, group * q_len, w.d_head)
    scores = qg @ keys.transpose(-1, -2) * w.d_head**-0.5  # [batch, n_kv, group*q, key]
    n_keys = keys.shape[2]
    if q_len > 1:
        query_pos = torch.arange(n_keys - q_len, n_keys, device=x.device).repeat(group)
        scores = scores.masked_fill(
            torch.arange(n_keys, device=x.device)[None, :] > query_pos[:, None], float("-inf")
        )
    z = scores.softmax(-1) @ values  # [batch, n_kv, group*q, d_head]
    z = z.view(batch, w.n_heads, q_len, w.d_head).transpose(1, 2).reshape(batch, q_len, -1)
    attn_out = F.linear(z, p["self_attn.o_proj.weight"])
    if patch is not None and patch.site == "attn":
        attn_out[patch.rows, 0] = patch.value
    x = x + attn_out
    mlp_out = mlp(w, layer, x)
    if patch is not None and patch.site == "mlp":
        mlp_out[patch.rows, 0] = patch.value
    return x + mlp_out, k, v, attn_out, mlp_out


@dataclass
class Run:
    """Every state of one (batched) forward pass: ``resid[l]`` is the input of block ``l``
    (``resid[-1]`` the final residual); ``keys``/``values[l]`` are block ``l``'s [batch, n_kv, pos,
    d_head]; ``attn_out``/``mlp_out[l]`` its sub-layer outputs [batch, pos, d_model]."""

    resid: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    values: list = field(default_factory=list)
    attn_out: list = field(default_factory=list)
    mlp_out: list = field(default_factory=list)


def full_run(weights: Weights, embeds: Float[Tensor, "batch pos d_model"]) -> Run:
    """Run every block over every position of ``embeds`` and keep every state."""
    state = Pass.over(weights, 0, embeds.shape[1], embeds.device)
    run = Run([embeds])
    x = embeds
    for layer in range(weights.n_layers):
        x, k, v, attn_out, mlp_out = block(state, layer, x)
        for store, value in zip(
            (run.resid, run.keys, run.values, run.attn_out, run.mlp_out),
            (x, k, v, attn_out, mlp_out),
            strict=True,
        ):
            store.append(value)
    return run


def final_logits(
    weights: Weights, final_resid: Float[Tensor, "batch d_model"]
) -> Float[Tensor, "batch d_vocab"]:
    """Logits from a final residual (one position): the final RMSNorm, then the unembedding."""
    return F.linear(rms_norm(final_resid, weights.norm, weights.eps), weights.unembed)
