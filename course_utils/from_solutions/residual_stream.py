"""GENERATED from solutions/01_residual_stream.ipynb by `make notebooks` — do not edit.

The cells marked `#| export residual_stream` there are the only text of this code: edit them,
then run `make notebooks` (python -m course_utils.exercises generate).
"""

import torch
from course_utils.model import position_embeddings

__all__ = ["embed", "attention_z", "head_outputs", "block_forward", "forward_from_parts", "decompose_resid", "direct_logit_attribution", "logit_lens"]


# solutions/01_residual_stream.ipynb, cell 7 (ex01_embed)
def embed(model, tokens: torch.Tensor) -> torch.Tensor:
    """tokens: Int[Tensor, "batch pos"] -> Float[Tensor, "batch pos d_model"], x_0 = W_E[t]."""
    return model.W_E[tokens]


# solutions/01_residual_stream.ipynb, cell 13 (ex01_attention_z)
def attention_z(pattern: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """pattern: Float[Tensor, "batch n_heads pos pos"], v:
    Float[Tensor, "batch pos n_kv_heads d_head"] -> z: Float[Tensor, "batch pos n_heads d_head"]."""
    group = pattern.shape[1] // v.shape[2]  # query heads per key/value head
    v_per_head = v.repeat_interleave(group, dim=2)  # KV heads 0,0,0,1,1,1,2,2,2
    return torch.einsum("bhqk,bkhd->bqhd", pattern, v_per_head)


# solutions/01_residual_stream.ipynb, cell 18 (ex01_head_outputs)
def head_outputs(model, z: torch.Tensor, layer: int) -> torch.Tensor:
    """z: Float[Tensor, "batch pos n_heads d_head"] ->
    Float[Tensor, "batch pos n_heads d_model"]."""
    return torch.einsum("bphd,hdm->bphm", z, model.W_O[layer])


# solutions/01_residual_stream.ipynb, cell 25 (ex01_block_forward)
def block_forward(block, resid_pre: torch.Tensor, position_embeddings: tuple) -> tuple:
    """resid_pre: Float[Tensor, "batch pos d_model"] -> (resid_mid, resid_post), both
    [batch pos d_model]."""
    attn_out, _pattern = block.attn(
        block.ln1(resid_pre), position_embeddings=position_embeddings, attention_mask=None
    )
    resid_mid = resid_pre + attn_out
    resid_post = resid_mid + block.mlp(block.ln2(resid_mid))
    return resid_mid, resid_post


# solutions/01_residual_stream.ipynb, cell 30 (ex01_forward_from_parts)
def forward_from_parts(model, tokens: torch.Tensor) -> torch.Tensor:
    """tokens: Int[Tensor, "batch pos"] -> logits: Float[Tensor, "batch pos d_vocab"]."""
    rotary = position_embeddings(model, tokens)
    resid = embed(model, tokens)
    for block in model.blocks:
        _resid_mid, resid = block_forward(block, resid, rotary)
    return model.ln_final(resid) @ model.W_U + model.b_U


# solutions/01_residual_stream.ipynb, cell 34 (ex01_decompose_resid)
def decompose_resid(cache, n_layers: int) -> tuple:
    """-> (Float[Tensor, "component batch pos d_model"], list[str]) with 2 * n_layers + 1
    components."""
    parts, labels = [cache["hook_embed"]], ["embed"]
    for L in range(n_layers):
        parts += [cache[f"blocks.{L}.hook_attn_out"], cache[f"blocks.{L}.hook_mlp_out"]]
        labels += [f"attn_{L}", f"mlp_{L}"]
    return torch.stack(parts), labels


# solutions/01_residual_stream.ipynb, cell 38 (ex01_direct_logit_attribution)
def direct_logit_attribution(
    model, components: torch.Tensor, final_scale: torch.Tensor, token_id: int
) -> torch.Tensor:
    """components: Float[Tensor, "component batch pos d_model"], final_scale:
    Float[Tensor, "batch pos 1"] -> Float[Tensor, "component batch pos"]."""
    direction = model.ln_final.w * model.W_U[:, token_id]  # [d_model]
    return (components / final_scale) @ direction


# solutions/01_residual_stream.ipynb, cell 56 (ex01_logit_lens)
def logit_lens(model, cache, pos: int = -1) -> torch.Tensor:
    """-> Float[Tensor, "layer batch d_vocab"], log-probabilities after 0..n_layers blocks."""
    n_layers = model.cfg.n_layers
    rows = [cache[f"blocks.{L}.hook_resid_pre"][:, pos] for L in range(n_layers)]
    rows.append(cache[f"blocks.{n_layers - 1}.hook_resid_post"][:, pos])
    resid = torch.stack(rows)  # [layer batch d_model]
    return (model.ln_final(resid) @ model.W_U + model.b_U).log_softmax(dim=-1)
