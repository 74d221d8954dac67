"""Scaling up (lesson 07): the course's experiments written once for nnsight, run on any Llama.

TransformerLens names activations after its own hook points; nnsight reaches the Hugging Face
modules themselves. SmolLM2 is a ``LlamaForCausalLM``, so the module paths below are those of
Llama-3.1-8B, -70B and -405B too: one function serves the 135M model on a laptop, a 70B model on
your own GPUs (``device_map="auto"``) and NDIF's hosted models (``remote=True``).

| TransformerLens hook (lessons 01-05)  | nnsight, on the HF model                               |
| ------------------------------------- | ------------------------------------------------------ |
| ``hook_embed``                        | ``model.model.embed_tokens.output``                    |
| ``blocks.{L}.hook_resid_pre``         | ``model.model.layers[L].input``                        |
| ``blocks.{L}.attn.hook_z`` (heads)    | ``model.model.layers[L].self_attn.o_proj.input`` (flat)|
| ``blocks.{L}.hook_attn_out``          | ``model.model.layers[L].self_attn.output[0]``          |
| ``blocks.{L}.hook_resid_mid``         | ``model.model.layers[L].post_attention_layernorm.input``|
| ``blocks.{L}.hook_mlp_out``           | ``model.model.layers[L].mlp.output``                   |
| ``blocks.{L}.hook_resid_post``        | ``model.model.layers[L].output``                       |
| ``ln_final.hook_out``                 | ``model.model.norm.output``                            |
| the logits                            | ``model.lm_head.output``                               |

Every experiment (except ``patch_layer``, the exercise's one-layer version of ``patching_sweep``)
takes an nnsight model and ``remote``: ``False`` runs here; ``"local"`` serialises the trace exactly
as for NDIF and runs it with the caller's modules hidden (the offline proof that the code would
ship); ``True`` (or a host URL) runs it on NDIF. ``scan=True`` runs the same code under fake tensors
on a weightless skeleton (``skeleton("70B")``) to check module paths and shapes. A failed connection
to NDIF raises ``NDIFUnavailable`` in the experiments written here; ``logit_lens`` (the exercise)
lets nnsight's own error through.

Lesson 07's exercises are the module's first experiments: ``to_tokens``, the logit lens
(``logit_lens``, returning ``[n_layers + 1, d_vocab]`` log-probabilities, with ``remote=`` and
``scan=``) and one layer of patching (``patch_layer``). Their only text is the lesson's solution
cells (marked ``#| export scaling``), imported here from the generated
``course_utils.from_solutions.scaling``; the rest is written here.

Answer ids come from ``course_utils.predictions.answer_token_id``, which takes an nnsight model (or
its tokenizer) as well as the bridge. Prompt convention: ``to_tokens`` prepends the tokenizer's BOS
(``<|endoftext|>`` for SmolLM2, ``<|begin_of_text|>`` for Llama-3.1) to a prompt encoded without
special tokens, like ``model.to_tokens`` in the earlier lessons. Layer numbering follows the
lessons: the logit lens has ``n_layers + 1`` rows (row 0 = embedding, row L = after L blocks);
patching writes ``layers[L].output`` (``hook_resid_post``); a task vector at layer L is the stream
*entering* block L (``hook_resid_pre``, lesson 05).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .from_solutions.scaling import logit_lens, to_tokens
from .from_solutions.scaling import patch_layer as patch_layer  # re-exported: exercise 07.3

SKELETON_DIR = Path(__file__).resolve().parent / "data" / "llama31"
SKELETONS = {
    "8B": "meta-llama/Llama-3.1-8B",
    "70B": "meta-llama/Llama-3.1-70B",
    "405B": "meta-llama/Llama-3.1-405B",
}
TL_TO_NNSIGHT = [  # in the order the model computes them (the order a trace must ask in)
    ("hook_embed", "model.model.embed_tokens.output"),
    ("blocks.{L}.hook_resid_pre", "model.model.layers[L].input"),
    ("blocks.{L}.attn.hook_z (flattened)", "model.model.layers[L].self_attn.o_proj.input"),
    ("blocks.{L}.hook_attn_out", "model.model.layers[L].self_attn.output[0]"),
    ("blocks.{L}.hook_resid_mid", "model.model.layers[L].post_attention_layernorm.input"),
    ("blocks.{L}.hook_mlp_out", "model.model.layers[L].mlp.output"),
    ("blocks.{L}.hook_resid_post", "model.model.layers[L].output"),
    ("ln_final.hook_out", "model.model.norm.output"),
    ("logits", "model.lm_head.output"),
]
STATUS_TIMEOUT_S = 15.0


class NDIFUnavailable(RuntimeError):
    """A remote run could not reach NDIF; the message says where it tried and what failed."""


# ---------------------------------------------------------------------------------------------
# Models


def load_nnsight_model(device: str | None = None):
    """The embedded SmolLM2-135M-Instruct as an nnsight ``TransformersModel`` (float32, offline).

    Built from the plain HF model (``course_utils.model.load_hf_model``), not from the
    TransformerBridge's ``original_model``: the bridge replaces submodules in place, so hooks on
    the original modules would silently never fire.
    """
    from nnsight.modeling.transformers import TransformersModel

    from .model import load_hf_model

    hf_model, tokenizer = load_hf_model(device)
    return TransformersModel(hf_model, tokenizer=tokenizer, task="text-generation")


def skeleton_config(size: str) -> dict:
    """The shipped public config of Llama-3.1-``size`` (``"8B"``, ``"70B"`` or ``"405B"``)."""
    if size not in SKELETONS:
        raise KeyError(f"no skeleton {size!r}; available: {', '.join(SKELETONS)}")
    return json.loads((SKELETON_DIR / f"Llama-3.1-{size}" / "config.json").read_text())


def skeleton(size: str, tokenizer):
    """A weightless (meta-device) Llama-3.1-``size``: every module and shape of the real model, no
    weights, no network. ``tokenizer`` only has to turn text into ids; a scan's shapes depend only
    on how many tokens there are (use the same ids for any model)."""
    from nnsight.modeling.transformers import TransformersModel

    skeleton_config(size)  # clear KeyError for a wrong size
    return TransformersModel(
        str(SKELETON_DIR / f"Llama-3.1-{size}"), tokenizer=tokenizer, task="text-generation"
    )


def n_params(config: dict) -> int:
    """Parameter count of a Llama config: embeddings, per-layer attention / MLP / norms, final norm
    and (untied) unembedding."""
    d, ffn, n_layers = (
        config["hidden_size"],
        config["intermediate_size"],
        config["num_hidden_layers"],
    )
    d_head = config.get("head_dim") or d // config["num_attention_heads"]
    q = config["num_attention_heads"] * d_head
    kv = config["num_key_value_heads"] * d_head
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * ffn + 2 * d
    embed = config["vocab_size"] * d
    return embed * (1 if config.get("tie_word_embeddings") else 2) + n_layers * per_layer + d


def bf16_weight_bytes(config: dict) -> int:
    """Bytes the weights take in bfloat16 (2 bytes each): the GPU memory floor of a local run."""
    return 2 * n_params(config)


def resid_bytes(config: dict, n_tokens: int, bytes_per_value: int = 2) -> int:
    """Bytes of the residual stream after every block for ``n_tokens`` tokens (bf16 by default):
    what a run that saved ``layers[L].output`` for all L would move."""
    return config["num_hidden_layers"] * n_tokens * config["hidden_size"] * bytes_per_value


# ---------------------------------------------------------------------------------------------
# Running a trace: locally, remote="local", on NDIF, or as a scan of a skeleton


def _n_layers(model) -> int:
    return int(model.config.num_hidden_layers)


def _tracer(model, tokens, remote, scan: bool):
    if scan:
        return model.scan(tokens)
    return model.trace(tokens, remote=remote) if remote else model.trace(tokens)


def _is_network_error(error: BaseException) -> bool:
    module = type(error).__module__ or ""
    return isinstance(error, (OSError, TimeoutError)) or module.split(".")[0] in {
        "httpx",
        "httpcore",
        "websocket",
        "requests",
        "urllib3",
        "huggingface_hub",
    }


@contextlib.contextmanager
def _readable_remote_errors(remote):
    """Turn a failed connection to NDIF into one ``NDIFUnavailable`` naming the host."""
    if not remote or remote == "local":
        yield
        return
    from nnsight import CONFIG

    host = remote if isinstance(remote, str) else CONFIG.API.HOST
    try:
        yield
    except Exception as error:
        if not _is_network_error(error):
            raise
        first = str(error).splitlines()[0] if str(error) else ""
        raise NDIFUnavailable(
            f"could not run on NDIF at {host}: {type(error).__name__}: {first}. "
            "Check your connection, NDIF_API_KEY and nnsight.status()."
        ) from None


# ---------------------------------------------------------------------------------------------
# Experiment: activation patching of the residual stream (clean -> corrupted)


@dataclass
class PatchingResult:
    """Logit difference ``logit(answer) - logit(foil)`` at the last position of the corrupted prompt
    with the clean ``hook_resid_post`` of (layer, position) patched in."""

    logit_diff: Float[Tensor, "layer pos"]
    clean: float
    corrupted: float
    layers: list[int]
    positions: list[int]

    @property
    def restored(self) -> Float[Tensor, "layer pos"]:
        """Fraction of the clean-vs-corrupted gap each patch restores (0 = none, 1 = all)."""
        return (self.logit_diff - self.corrupted) / (self.clean - self.corrupted)


def patching_sweep(
    model,
    clean: Int[Tensor, "batch pos"],
    corrupted: Int[Tensor, "batch pos"],
    answer: int,
    foil: int,
    positions: Sequence[int],
    layers: Sequence[int] | None = None,
    layers_per_trace: int | None = None,
    remote=False,
    scan: bool = False,
) -> PatchingResult:
    """Patch the clean ``hook_resid_post`` into the corrupted run at every (layer, position).

    ``patch_layer``'s idea with more rows: a trace's batch is [clean, corrupted, then one corrupted
    row per (layer, position) of its chunk of ``layers_per_trace`` layers (default: all of them)],
    so the whole sweep is one forward pass per chunk, and all chunks run in one session (on NDIF:
    one job, one queue wait). ``answer`` is the clean prompt's answer and ``foil`` the corrupted
    prompt's, so a patch that carries the clean fact raises the metric.
    """
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean {tuple(clean.shape)} and corrupted {tuple(corrupted.shape)} prompts "
            "must have the same number of tokens"
        )
    layers = list(range(_n_layers(model))) if layers is None else list(layers)
    positions = list(positions)
    chunk = layers_per_trace or len(layers)
    chunks = [layers[i : i + chunk] for i in range(0, len(layers), chunk)]
    cols = torch.tensor(positions)
    with _readable_remote_errors(remote):
        session = (
            contextlib.nullcontext()
            if scan
            else (model.session(remote=remote) if remote else model.session())
        )
        with session:
            diffs = [] if scan else list().save()  # a scan has no session to save from
            for group in chunks:
                batch = torch.cat([clean, corrupted.expand(1 + len(group) * len(positions), -1)])
                with _tracer(model, batch, False, scan):
                    for i, layer in enumerate(group):
                        rows = torch.arange(2 + i * len(positions), 2 + (i + 1) * len(positions))
                        resid = model.model.layers[layer].output
                        resid[rows, cols] = resid[0, cols]
                    logits = model.lm_head.output[:, -1]
                    diffs.append((logits[:, answer] - logits[:, foil]).float().save())
    diffs = [torch.as_tensor(d) for d in diffs]
    patched = torch.cat([d[2:] for d in diffs]).reshape(len(layers), len(positions))
    if scan:  # fake tensors have shapes, not values
        return PatchingResult(patched, float("nan"), float("nan"), layers, positions)
    return PatchingResult(patched, float(diffs[0][0]), float(diffs[0][1]), layers, positions)


def plot_patching(result: PatchingResult, tokenizer, tokens: Int[Tensor, "batch pos"], ax=None):
    """Heatmap of ``result.restored`` (layer × patched position), diverging colours centred at 0.
    Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 4))
    else:
        fig = ax.figure
    image = ax.imshow(
        result.restored.detach().cpu().numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto"
    )
    ax.set_xticks(
        range(len(result.positions)),
        [f"{p}: {tokenizer.decode([int(tokens[0, p])])!r}" for p in result.positions],
    )
    ax.set_yticks(range(len(result.layers)), result.layers)
    ax.set_xlabel("patched position (clean token)")
    ax.set_ylabel("layer (hook_resid_post)")
    ax.set_title("fraction of the logit-difference gap restored")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Experiment: task vectors (lesson 05)


def right_padded(
    tokenizer, prompts: Sequence[str]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """BOS-first ids of several prompts, right-padded into one batch, and each one's last index.

    Right padding is exact for a causal model: a position never attends to the padding after it."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    rows = [to_tokens(tokenizer, p)[0].tolist() for p in prompts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.bos_token_id
    tokens = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
    return tokens, torch.tensor([len(r) - 1 for r in rows])


def task_vector(
    model, prompts: Sequence[str], layer: int, remote=False, scan: bool = False
) -> Float[Tensor, " d_model"]:
    """θ: the stream entering block ``layer`` (``layers[layer].input``) at each prompt's last token,
    averaged over ``prompts`` (one right-padded batch, one trace; only d_model numbers come
    back)."""
    tokens, last = right_padded(model.tokenizer, prompts)
    rows = torch.arange(len(prompts))
    with _readable_remote_errors(remote):
        with _tracer(model, tokens, remote, scan):
            theta = model.model.layers[layer].input[rows, last].mean(0).save()
    return theta


def patched_predictions(
    model,
    queries: Sequence[str],
    theta: Float[Tensor, " d_model"],
    layer: int,
    remote=False,
    scan: bool = False,
) -> Int[Tensor, " batch"]:
    """Top-1 next token of each zero-shot prompt ``query ->`` with θ written into the stream
    entering block ``layer`` at its last token (Hendel et al.'s replacement); one trace."""
    from .task_vectors import zero_shot_prompt

    tokens, last = right_padded(model.tokenizer, [zero_shot_prompt(q) for q in queries])
    rows = torch.arange(len(queries))
    with _readable_remote_errors(remote):
        with _tracer(model, tokens, remote, scan):
            model.model.layers[layer].input[rows, last] = theta
            top = model.lm_head.output[rows, last].argmax(-1).save()
    return top


# ---------------------------------------------------------------------------------------------
# Scanning an experiment against a skeleton


@dataclass
class ScanReport:
    """What a scan of one experiment on one skeleton found (no weights, no numbers)."""

    model: str
    experiment: str
    n_layers: int
    n_params: int
    shapes: dict[str, tuple[int, ...]]
    saved_bytes: int  # what the real run would send back (the saved values)
    resid_bytes: int  # the residual stream after every block for these tokens, bf16
    weight_bytes: int  # bf16 weights: the memory floor of running it yourself
    seconds: float = field(default=0.0, repr=False)

    def line(self) -> str:
        shapes = ", ".join(f"{k} {v}" for k, v in self.shapes.items())
        return (
            f"{self.model:16} {self.experiment:13} {self.n_layers:3} layers: {shapes}; "
            f"downloads {_human(self.saved_bytes)}, residual stream {_human(self.resid_bytes)}, "
            f"bf16 weights {_human(self.weight_bytes)}"
        )


def _human(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    raise AssertionError("unreachable")


def _nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, f)) for f in value.__dataclass_fields__)
    return 0


def scan_experiment(
    size: str, experiment: str, tokenizer, tokens: Int[Tensor, "batch pos"], model=None
) -> ScanReport:
    """Run ``experiment`` (``"logit_lens"``, ``"patching"`` or ``"task_vector"``) as a scan on the
    Llama-3.1-``size`` skeleton with these token ids, and report shapes and memory from its config.

    The patching scan covers the first and last layer (the code is the same for every layer); the
    task-vector scan extracts θ from one prompt and patches it into one query, at the middle layer.
    """
    config = skeleton_config(size)
    start = time.perf_counter()
    model = model if model is not None else skeleton(size, tokenizer)
    n_layers, n_tokens = config["num_hidden_layers"], tokens.shape[1]
    if experiment == "logit_lens":
        log_probs = logit_lens(model, tokens, scan=True)
        shapes = {"log_probs": tuple(log_probs.shape)}
        saved = _nbytes(log_probs)
    elif experiment == "patching":
        positions = [1, n_tokens - 1]
        result = patching_sweep(
            model, tokens, tokens, 0, 1, positions, layers=[0, n_layers - 1], scan=True
        )
        shapes = {"logit_diff": tuple(result.logit_diff.shape)}
        saved = (2 + n_layers * len(positions)) * 4  # float32 logit differences of a full sweep
        shapes["full sweep"] = (n_layers, len(positions))
    elif experiment == "task_vector":
        text = tokenizer.decode(tokens[0, 1:])
        layer = n_layers // 2
        theta = task_vector(model, [text], layer, scan=True)
        top = patched_predictions(
            model,
            ["a"],
            torch.zeros(theta.shape, dtype=theta.dtype, device=theta.device),
            layer,
            scan=True,
        )
        shapes = {"theta": tuple(theta.shape), "top-1": tuple(top.shape)}
        saved = _nbytes(theta) + _nbytes(top)
    else:
        raise ValueError(
            f"unknown experiment {experiment!r}; use logit_lens, patching or task_vector"
        )
    return ScanReport(
        f"Llama-3.1-{size}",
        experiment,
        n_layers,
        n_params(config),
        shapes,
        saved,
        resid_bytes(config, n_tokens),
        bf16_weight_bytes(config),
        time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------
# NDIF: is a remote run possible here, now?


def _hf_token() -> str | None:
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # an unreadable token file counts as no token
        return None


def _model_running(repo: str, timeout: float) -> tuple[bool | None, str]:
    """(running?, reason): ``nnsight.is_model_running`` in a daemon thread with a hard timeout, so
    an unreachable service or hub costs ``timeout`` seconds at most, never a hang."""
    import threading

    import nnsight

    answer: dict = {}

    def ask():
        try:
            answer["running"] = bool(nnsight.is_model_running(repo))
        except Exception as error:  # the hub or the service failed: report, don't raise
            answer["error"] = (
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            )

    with contextlib.redirect_stderr(open(os.devnull, "w")):  # its own "Down" banner: we say it once
        thread = threading.Thread(target=ask, daemon=True)
        thread.start()
        thread.join(timeout)
    if thread.is_alive():
        return None, f"NDIF's status did not answer within {timeout:.0f} s"
    if "error" in answer:
        return None, f"NDIF's status check failed ({answer['error']})"
    return answer["running"], ""


def ndif_readiness(repo: str, timeout: float = STATUS_TIMEOUT_S) -> tuple[bool, str]:
    """``(ready, line)``: whether ``repo`` can run on NDIF from here, and one line saying why not.

    Needs an NDIF API key (``NDIF_API_KEY``, free at https://login.ndif.us), a Hugging Face token
    with access to the gated meta-llama repository (``HF_TOKEN``; accept Meta's licence on the
    model page), and the model listed as RUNNING by ``nnsight.is_model_running``; 405B also needs
    an accepted application to NDIF's pilot programme. Nothing is contacted before the key and token
    are present."""
    from nnsight import CONFIG

    missing = []
    if not (os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY):
        missing.append("NDIF_API_KEY (free key: sign up at https://login.ndif.us)")
    if repo.startswith("meta-llama/") and not _hf_token():
        missing.append(
            f"HF_TOKEN with access to the gated {repo} (accept Meta's licence on its page)"
        )
    pilot = " and, for 405B, an accepted NDIF pilot application" if "405B" in repo else ""
    if missing:
        return False, f"Skipped the NDIF run: set {' and '.join(missing)}{pilot}."
    running, reason = _model_running(repo, timeout)
    if reason:
        return (
            False,
            f"Skipped the NDIF run: {reason}; try again later (nnsight.status() lists models).",
        )
    if not running:
        return False, (
            f"Skipped the NDIF run: {repo} is not running on NDIF now "
            f"(nnsight.status() lists what is){pilot or ''}."
        )
    return True, f"{repo} is running on NDIF: running the experiments there."
