"""Tests of course_utils/fast_forward.py: the fast engine against the bridge's own numbers."""

from types import SimpleNamespace

import pytest
import torch

from course_utils import fast_forward as ff
from course_utils.hooks import make_zero_ablation

PROMPT = "The Eiffel Tower is located in the city of"
ATOL = 1e-4  # the engine repeats the HF arithmetic; restarted blocks add float32 rounding (~1e-5)


@pytest.fixture(scope="module")
def weights(model):
    return ff.Weights(model)


@pytest.fixture(scope="module")
def tokens(model):
    return model.to_tokens(PROMPT)


@pytest.fixture(scope="module")
def run(weights, tokens):
    with torch.no_grad():
        return ff.full_run(weights, weights.embed[tokens])


@pytest.fixture(scope="module")
def bridge(model, tokens):
    """The bridge's logits and cache of the same prompt: the truth the engine must reproduce."""
    names = ("hook_resid_post", "hook_attn_out", "hook_mlp_out", "hook_embed")
    with torch.no_grad():
        return model.run_with_cache(tokens, names_filter=lambda name: name.endswith(names))


def _close(got, want, what):
    diff = float((got - want).abs().max())
    assert diff <= ATOL, f"{what}: max |engine - bridge| = {diff:.2e} > {ATOL}"


def test_full_run_reproduces_every_state_and_the_logits_of_the_bridge(weights, run, bridge):
    logits, cache = bridge
    _close(run.resid[0], cache["hook_embed"], "embeddings")
    for layer in range(weights.n_layers):
        _close(run.attn_out[layer], cache[f"blocks.{layer}.hook_attn_out"], f"attn_out {layer}")
        _close(run.mlp_out[layer], cache[f"blocks.{layer}.hook_mlp_out"], f"mlp_out {layer}")
        _close(run.resid[layer + 1], cache[f"blocks.{layer}.hook_resid_post"], f"resid {layer}")
    got = ff.final_logits(weights, run.resid[-1][:, -1])
    _close(got, logits[:, -1], "logits at the last position")
    assert got.argmax() == logits[0, -1].argmax()
    n_pos = logits.shape[1]
    assert [len(run.keys), len(run.values), len(run.resid)] == [weights.n_layers] * 2 + [
        weights.n_layers + 1
    ]
    assert run.keys[0].shape == (1, weights.n_kv, n_pos, weights.d_head)


@pytest.mark.parametrize("start", [1, 5, 10])
def test_a_block_restarted_at_a_later_position_equals_the_full_run(weights, run, start):
    """Keys and values of positions before ``start`` come from the prefix; the computed positions
    must come out as in the full run, and so must their own keys and values."""
    n_pos = run.resid[0].shape[1]
    state = ff.Pass.over(weights, start, n_pos)
    for layer in (0, 13, weights.n_layers - 1):
        prefix = (run.keys[layer][:, :, :start], run.values[layer][:, :, :start])
        with torch.no_grad():
            x, k, v, attn_out, mlp_out = ff.block(state, layer, run.resid[layer][:, start:], prefix)
        _close(x, run.resid[layer + 1][:, start:], f"output of block {layer} from {start}")
        _close(k, run.keys[layer][:, :, start:], f"keys of block {layer}")
        _close(v, run.values[layer][:, :, start:], f"values of block {layer}")
        _close(attn_out, run.attn_out[layer][:, start:], f"attn_out of block {layer}")
        _close(mlp_out, run.mlp_out[layer][:, start:], f"mlp_out of block {layer}")
        last, *_ = ff.block(state, layer, run.resid[layer][:, start:], prefix, last_only=True)
        assert last.shape[1] == 1
        _close(last[:, 0], run.resid[layer + 1][:, -1], f"last_only output of block {layer}")


@pytest.mark.parametrize("site", ["attn", "mlp"])
def test_a_patched_run_from_a_later_position_equals_the_bridge_with_a_hook(
    model, weights, run, tokens, site
):
    """Zero one sub-layer's output at one position, rerun only what that changes (later blocks,
    later positions), and compare the logits with the bridge running a zero-ablation hook."""
    layer, pos = 8, 4
    n_pos = tokens.shape[1]
    state = ff.Pass.over(weights, pos, n_pos)
    x = run.resid[layer][:, pos:]
    patch = ff.Patch(site, torch.tensor([0]), torch.zeros(weights.embed.shape[1]))
    with torch.no_grad():
        for block in range(layer, weights.n_layers):
            prefix = (run.keys[block][:, :, :pos], run.values[block][:, :, :pos])
            x = ff.block(state, block, x, prefix, patch if block == layer else None)[0]
        got = ff.final_logits(weights, x[:, -1])
        want = model.run_with_hooks(
            tokens, fwd_hooks=[(f"blocks.{layer}.hook_{site}_out", make_zero_ablation(pos))]
        )[:, -1]
    _close(got, want, f"logits with {site}_out zeroed at ({layer}, {pos})")
    unpatched = ff.final_logits(weights, run.resid[-1][:, -1])
    assert float((got - unpatched).abs().max()) > 100 * ATOL, "the patch changed nothing"


def test_patch_and_weights_refuse_what_the_engine_cannot_do():
    with pytest.raises(ValueError, match="'attn' or 'mlp'"):
        ff.Patch("resid", torch.tensor([0]), torch.zeros(3))
    config = SimpleNamespace(
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        hidden_size=8,
        rms_norm_eps=1e-5,
        hidden_act="gelu",
    )
    with pytest.raises(NotImplementedError, match="SiLU"):
        ff.Weights(SimpleNamespace(original_model=SimpleNamespace(config=config)))
    config.hidden_act = "silu"
    config.rope_parameters = {"rope_theta": 1e4, "rope_type": "llama3"}
    with pytest.raises(NotImplementedError, match="rotary"):
        ff.Weights(SimpleNamespace(original_model=SimpleNamespace(config=config)))
