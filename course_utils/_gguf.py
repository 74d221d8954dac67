"""Turn the embedded GGUF file into a float ``LlamaForCausalLM`` and its tokenizer.

transformers can load a GGUF file directly (``from_pretrained(..., gguf_file=...)``), but on a
2-core CPU that path parses the file three times and takes 30-40 s. Here the tensor table is
parsed once with transformers' fast header reader, every tensor is dequantized with transformers'
own kernels, and the GGUF tensor names are mapped to Llama parameter names.
``tests/test_model.py`` checks that the result is identical to transformers' slow path.
"""

from __future__ import annotations

import re

import torch

# GGUF name (with {i} for the block index) -> Hugging Face Llama parameter name
_LLAMA_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def _hf_name(gguf_name: str) -> str:
    match = _BLOCK.match(gguf_name)
    if match is None:
        return _LLAMA_NAMES[gguf_name]
    template = _BLOCK.sub("blk.{i}.", gguf_name)
    return _LLAMA_NAMES[template].format(i=match.group(1))


def _unpermute_rotary(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of q/k rows (it interleaves the two rotary halves of each head).

    weight: [n_heads * d_head, d_model] -> same shape, rows in Hugging Face order.
    """
    d_half = weight.shape[0] // n_heads // 2
    return weight.reshape(n_heads, d_half, 2, -1).transpose(1, 2).reshape(weight.shape)


def load_gguf_llama(directory: str, filename: str):
    """Load ``directory/filename`` (a llama-architecture GGUF) as float32 (model, tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.integrations.gguf.dequant import dequantize
    from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict

    config = AutoConfig.from_pretrained(directory, gguf_file=filename)
    config.quantization_config = None  # the float copy is not quantized
    if hasattr(config, "_name_or_path"):
        config._name_or_path = ""
    if config.model_type != "llama":
        raise ValueError(f"expected a llama-architecture GGUF file, got {config.model_type!r}")
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)

    header = GgufHeader.from_file(f"{directory}/{filename}")
    state_dict = {}
    for gguf_name, lazy in load_gguf_state_dict(header).items():
        raw = lazy[...]
        if raw.dtype == torch.uint8:  # quantized blocks
            weight = dequantize(raw, lazy.ggml_type, torch.float32).reshape(lazy.shape[:-1] + (-1,))
        else:
            weight = raw.to(torch.float32)
        if ".attn_q." in gguf_name:
            weight = _unpermute_rotary(weight, config.num_attention_heads)
        elif ".attn_k." in gguf_name:
            weight = _unpermute_rotary(weight, config.num_key_value_heads)
        state_dict[_hf_name(gguf_name)] = weight

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if config.tie_word_embeddings:
        missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(
            f"GGUF tensors do not match the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.eval()
    return model, tokenizer
