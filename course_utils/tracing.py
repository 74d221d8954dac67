"""Causal tracing (lesson 04): where in the network does the model recall a fact?

Meng et al. (2022, "Locating and Editing Factual Associations in GPT", ROME) corrupt a prompt by
adding Gaussian noise to the embeddings of the subject's tokens ("The *Eiffel Tower* is located in
the city of"), then restore one clean internal state at a time and ask how much of p(" Paris") comes
back. A state that restores much of it carries the fact at that (layer, token).

Two engines give the same numbers (tested to 1e-5):

* ``trace_reference`` follows ROME's loop literally: for every (layer, token) cell, one forward pass
  of the TransformerBridge over a batch of noise samples, with the noised subject embeddings patched
  into ``hook_embed`` and the clean state patched back at the traced layer(s). Easy to read, slow:
  ``n_layers × n_tokens`` full forward passes.
* ``trace`` (the fast engine) runs the model's own weights directly (``fast_forward``) and skips
  work that cannot change: a restore at layer l leaves layers before l untouched, and with causal
  attention it leaves positions before the restored token untouched. So for a restored token t it
  computes only positions t..end, reads the keys and values of earlier positions from the cached
  corrupted run, starts each cell at the first layer it changes, batches all layers of one token
  into one growing batch, and unembeds only the last position. Restores before the first subject
  token change nothing, so they are not run. Smaller savings, each measured (benchmarks/tracing.py):
  the final block runs its queries and MLP at the last position only; the first block of an
  MLP/attention window changes only the restored position, so it is worked out for that position
  alone; cells whose runs are still identical (windows clipped at layer 0) share rows; a hidden
  restore at the first subject token makes that position clean for good, so it joins the cached
  prefix. What is left is matrix products running near this CPU's measured peak, which no reordering
  removes: the remaining work is the trace itself.

The fast engine's forward pass, the Llama block on the model's weights that can start at any layer
and position, is ``course_utils/fast_forward.py``; its docstring says why the bridge's
``start_at_layer`` cannot do this.

Both engines build on lesson 02's hook factories (``course_utils.hooks``): the noise is the noise
``make_noise_hook`` draws (``make_noise``), and the reference engine corrupts and restores with
``make_patch_from`` hooks.

Noise (ROME's rule, the default): Gaussian with standard deviation 3 × the std of the subject-token
embeddings over a dataset of subjects — here the course's shipped facts (``rome_noise_scale``). Pass
``noise=`` to add an explicit tensor instead, e.g. another implementation's draws, or the difference
of two subjects' embeddings (symmetric token replacement, one "sample").

Metrics: every trace records, per cell and averaged over the noise samples, p(answer), log p(answer)
and, with a ``foil``, the logit difference logit(answer) − logit(foil) (``TraceResult.effect``).

Kinds (ROME's names): ``"hidden"`` restores the residual stream after block l (``hook_resid_post``);
``"mlp"`` and ``"attn"`` restore the MLP / attention outputs of a window of ``window`` layers
centred on l (ROME: 10), at one token.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, replace

import torch
from jaxtyping import Float
from torch import Tensor

from .facts import load_facts, subject_token_span
from .fast_forward import Pass, Patch, Run, Weights, block, final_logits, full_run, mlp
from .hooks import make_noise_hook, make_patch_from
from .predictions import answer_token_id

KINDS = ("hidden", "mlp", "attn")
METRICS = ("prob", "log_prob", "logit_diff")
HOOK_OF_KIND = {"hidden": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}
NOISE_MULTIPLIER = 3.0  # ROME: noise std = 3 × the std of subject-token embeddings
DEFAULT_SAMPLES = 10
DEFAULT_WINDOW = 10
DEFAULT_SEED = 0


# --------------------------------------------------------------------------------------------
# Inputs: noise, validation (the subject's span: ``course_utils.facts.subject_token_span``)
# --------------------------------------------------------------------------------------------


def subject_embedding_std(model, subjects: list[str]) -> float:
    """Std of all embedding entries of the subjects' tokens (ROME computes it over its whole
    dataset).

    Each subject is tokenized as it appears after a space, as in a prompt (" Eiffel Tower")."""
    ids = []
    for subject in subjects:
        ids += model.tokenizer.encode(" " + subject.strip(), add_special_tokens=False)
    embed = model.original_model.get_input_embeddings().weight.detach()
    return float(embed[torch.tensor(ids, device=embed.device)].std())


def rome_noise_scale(model, subjects: list[str] | None = None) -> float:
    """ROME's noise level: ``NOISE_MULTIPLIER`` (3) × the std of subject-token embeddings over a
    dataset of subjects; by default the subjects of the course's known facts
    (``course_utils/data/facts.json``). This is ``trace()``'s default. (3 × the std of one subject's
    own tokens differs: 0.354 for the Eiffel Tower against 0.342 over the shipped facts.)"""
    if subjects is None:
        subjects = [fact["subject"] for fact in load_facts()]
    return NOISE_MULTIPLIER * subject_embedding_std(model, subjects)


def make_noise(
    samples: int, n_tokens: int, d_model: int, scale: float, seed: int = DEFAULT_SEED
) -> Float[Tensor, "sample pos d_model"]:
    """The course's noise, as a tensor: what lesson 02's ``make_noise_hook(positions, scale,
    seed=seed)`` adds to ``samples`` rows of ``n_tokens`` positions, i.e. ``scale *
    torch.randn((samples, n_tokens, d_model))`` drawn from a ``torch.Generator`` seeded with
    ``seed``. Every engine and exercise adds this same noise."""
    zeros = torch.zeros(samples, n_tokens, d_model)
    return make_noise_hook(slice(None), scale, seed=seed)(zeros)  # 0 + noise: the noise itself


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _check_layers(model, layers) -> list[int]:
    n_layers = model.cfg.n_layers
    layers = list(range(n_layers)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layer {bad[0]} is out of range: this model has layers 0..{n_layers - 1}")
    return layers


def _check_positions(positions, n_pos: int) -> list[int]:
    positions = list(range(n_pos)) if positions is None else [int(p) for p in positions]
    bad = [p for p in positions if not 0 <= p < n_pos]
    if bad:
        raise ValueError(
            f"position {bad[0]} is out of range: the prompt has positions 0..{n_pos - 1} (0 is BOS)"
        )
    return positions


def window_layers(layer: int, n_layers: int, kind: str, window: int = DEFAULT_WINDOW) -> list[int]:
    """Layers restored for a cell at ``layer``: just ``[layer]`` for hidden states; for MLP and
    attention ROME's window ``range(layer - window // 2, layer + ceil(window / 2))``, clipped."""
    _check_kind(kind)
    if kind == "hidden":
        return [layer]
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


# --------------------------------------------------------------------------------------------
# The result and its plot
# --------------------------------------------------------------------------------------------


@dataclass
class TraceSettings:
    """How a trace was run. ``noise_scale`` and ``seed`` are None when an explicit noise tensor was
    given."""

    kind: str
    samples: int
    noise_scale: float | None
    seed: int | None
    window: int


@dataclass
class TraceResult:
    """A causal trace. ``scores[layer, pos]`` is p(answer) with that cell restored, averaged over
    the noise samples (NaN for cells that were not traced). ``log_scores`` is the mean over samples
    of log p(answer); ``logit_diffs`` the mean of logit(answer) − logit(foil) when a foil was given.
    ``clean``/``corrupted`` hold the three metrics of the clean run and of the corrupted run."""

    prompt: str
    subject: str
    answer: str
    tokens: list[str]
    subject_span: tuple[int, int]
    scores: Float[Tensor, "layer pos"]
    clean_prob: float
    corrupted_prob: float
    settings: TraceSettings
    log_scores: Float[Tensor, "layer pos"] | None = None
    foil: str | None = None
    logit_diffs: Float[Tensor, "layer pos"] | None = None
    clean: dict = field(default_factory=dict)
    corrupted: dict = field(default_factory=dict)

    @property
    def indirect_effect(self) -> Float[Tensor, "layer pos"]:
        """p(answer | corrupted, cell restored) − p(answer | corrupted): ROME's indirect effect."""
        return self.scores - self.corrupted_prob

    def effect(self, metric: str = "prob") -> Float[Tensor, "layer pos"]:
        """Restored minus corrupted, in ``metric``: ``"prob"`` (ROME's indirect effect),
        ``"log_prob"`` (mean log p(answer)) or ``"logit_diff"`` (mean logit(answer) − logit(foil);
        needs a foil)."""
        return self.metric_scores(metric) - self.corrupted[metric]

    def metric_scores(self, metric: str = "prob") -> Float[Tensor, "layer pos"]:
        """The traced cells in ``metric`` (see ``effect``)."""
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if metric == "logit_diff" and self.logit_diffs is None:
            raise ValueError(
                "this trace has no logit difference: pass foil=' Rome' (a competing answer) to "
                "trace"
            )
        return {"prob": self.scores, "log_prob": self.log_scores, "logit_diff": self.logit_diffs}[
            metric
        ]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["scores"] = self.scores.tolist()
        return out


def plot_trace(result: TraceResult, ax=None, title: str | None = None):
    """ROME-style heatmap: tokens down, layers across, colour = p(answer) with that cell restored.

    The colour scale starts at the corrupted baseline (white = restoring does nothing); subject
    tokens are starred. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    cmap = {"hidden": "Purples", "mlp": "Greens", "attn": "Reds"}[result.settings.kind]
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.32 * len(result.tokens) + 1.2), dpi=100)
    else:
        fig = ax.figure
    scores = result.scores.T.numpy()  # [pos, layer]
    image = ax.pcolor(
        scores,
        cmap=cmap,
        vmin=result.corrupted_prob,
        vmax=max(result.clean_prob, float(torch.nan_to_num(result.scores).max())),
    )
    ax.invert_yaxis()
    start, stop = result.subject_span
    labels = [
        f"{tok!r}*" if start <= i < stop else repr(tok) for i, tok in enumerate(result.tokens)
    ]
    ax.set_yticks([0.5 + i for i in range(len(labels))], labels, fontsize=8)
    n_layers = scores.shape[1]
    ticks = list(range(0, n_layers, 5))
    ax.set_xticks([0.5 + i for i in ticks], [str(i) for i in ticks])
    what = {
        "hidden": "single restored layer",
        "mlp": f"MLP outputs, window {result.settings.window}",
        "attn": f"attention outputs, window {result.settings.window}",
    }[result.settings.kind]
    ax.set_xlabel(f"layer ({what})")
    ax.set_title(
        title or f"Restoring {result.settings.kind} states: {result.prompt!r} → {result.answer!r}",
        fontsize=9,
    )
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label(f"p({result.answer!r})")
    fig.tight_layout()
    return fig


def _prepare(
    model, prompt, subject, answer, kind, samples, noise_scale, seed, window, noise=None, foil=None
):
    """Validated inputs of a trace: tokens [1, pos], answer/foil ids, span, noise
    [sample, n_subject, d_model]."""
    _check_kind(kind)
    answer_id = answer_token_id(model, answer)  # raises a clear error when not a single token
    foil_id = None if foil is None else answer_token_id(model, foil)
    span = subject_token_span(model, prompt, subject)
    tokens = model.to_tokens(prompt)
    n_subject, d_model = span[1] - span[0], model.cfg.d_model
    if noise is not None:
        if noise_scale is not None:
            raise ValueError(
                "give noise_scale (the course draws the noise) or noise (your own tensor), not both"
            )
        if (
            not isinstance(noise, Tensor)
            or noise.ndim != 3
            or tuple(noise.shape[1:]) != (n_subject, d_model)
        ):
            shape = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
            raise ValueError(
                f"noise must be a tensor [sample, {n_subject}, {d_model}] (one row per subject "
                f"token {span[0]}..{span[1] - 1}), got {shape}"
            )
        noise = noise.detach().float().cpu()
        settings = TraceSettings(kind, noise.shape[0], None, None, window)
        return tokens, answer_id, foil_id, span, noise, settings
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if noise_scale is None:
        noise_scale = rome_noise_scale(model)
    settings = TraceSettings(kind, samples, float(noise_scale), seed, window)
    noise = make_noise(samples, n_subject, d_model, float(noise_scale), seed)
    return tokens, answer_id, foil_id, span, noise, settings


def _readout(
    logits: Float[Tensor, "batch d_vocab"], answer_id: int, foil_id: int | None
) -> Float[Tensor, "batch 3"]:
    """p(answer), log p(answer) and logit(answer) − logit(foil) (NaN without a foil), per row."""
    log_probs = logits.log_softmax(-1)[:, answer_id]
    diff = (
        logits[:, answer_id] - logits[:, foil_id]
        if foil_id is not None
        else torch.full_like(log_probs, float("nan"))
    )
    return torch.stack([log_probs.exp(), log_probs, diff], dim=-1)


def _result(model, prompt, subject, answer, foil, tokens, span, grids, clean, corrupted, settings):
    """A TraceResult from ``grids`` [3, layer, pos] and the clean/corrupted readouts [3] (sample
    means)."""
    clean, corrupted = (
        {m: float(v) for m, v in zip(METRICS, values, strict=False)}
        for values in (clean, corrupted)
    )
    return TraceResult(
        prompt,
        subject,
        answer,
        model.to_str_tokens(tokens),
        span,
        grids[0].clone(),
        clean["prob"],
        corrupted["prob"],
        settings,
        log_scores=grids[1].clone(),
        foil=foil,
        logit_diffs=grids[2].clone() if foil is not None else None,
        clean=clean,
        corrupted=corrupted,
    )


# --------------------------------------------------------------------------------------------
# The traces: one implementation, two engines
# --------------------------------------------------------------------------------------------


def trace(
    model, prompt: str, subject: str, answer: str, kind: str = "hidden", **options
) -> TraceResult:
    """Causal trace (fast engine): the same numbers as ``trace_reference``, several times faster.

    kind: ``"hidden"``, ``"mlp"`` or ``"attn"``. Keyword options, all optional (the same for
    ``trace_all_kinds`` and ``trace_reference``):

    * samples: noise samples per cell (ROME: 10);
    * noise_scale: std of the added noise (default: ROME's rule, ``rome_noise_scale(model)``: 3 ×
      the std of subject-token embeddings over the course's facts); seed: seeds the noise
      (``make_noise``);
    * noise: an explicit tensor [sample, n_subject_tokens, d_model] added to the subject's
      embeddings instead (then ``samples``/``seed`` are ignored and ``noise_scale`` must be None);
    * foil: a competing answer (" Rome"); the result then also holds logit(answer) − logit(foil);
    * window: layers restored around each MLP/attention cell (ROME: 10);
    * layers/positions: trace only these; progress: show a progress bar (default True).

    Returns a ``TraceResult``.
    """
    return _trace(model, prompt, subject, answer, (kind,), "fast", **options)[kind]


def trace_all_kinds(
    model, prompt: str, subject: str, answer: str, **options
) -> dict[str, TraceResult]:
    """``{"hidden": ..., "mlp": ..., "attn": ...}`` from the fast engine with the same settings and
    the same noise; the clean and corrupted runs are computed once for all three. Options as for
    ``trace``."""
    return _trace(model, prompt, subject, answer, KINDS, "fast", **options)


def trace_reference(
    model,
    prompt: str,
    subject: str,
    answer: str,
    kind: str = "hidden",
    progress: bool = False,
    **options,
) -> TraceResult:
    """Causal trace the way ROME's code does it: one forward pass of the bridge (batched over noise
    samples) per cell. Options as for ``trace`` (``progress`` defaults to False here)."""
    return _trace(
        model, prompt, subject, answer, (kind,), "reference", progress=progress, **options
    )[kind]


@torch.no_grad()
def _trace(
    model,
    prompt: str,
    subject: str,
    answer: str,
    kinds: tuple[str, ...],
    engine: str,
    *,
    samples: int = DEFAULT_SAMPLES,
    noise_scale: float | None = None,
    seed: int = DEFAULT_SEED,
    window: int = DEFAULT_WINDOW,
    noise: Tensor | None = None,
    foil: str | None = None,
    layers=None,
    positions=None,
    progress: bool = True,
) -> dict[str, TraceResult]:
    """The traces of ``kinds`` with one ``engine`` (``"fast"`` or ``"reference"``), sharing the
    inputs, the noise and the clean and corrupted runs; the options are documented in ``trace``."""
    for kind in kinds:
        _check_kind(kind)
    tokens, answer_id, foil_id, span, noise, settings = _prepare(
        model, prompt, subject, answer, kinds[0], samples, noise_scale, seed, window, noise, foil
    )
    layers = _check_layers(model, layers)
    positions = _check_positions(positions, tokens.shape[1])
    readouts = {"fast": _fast_readouts, "reference": _reference_readouts}[engine]
    grids, clean, corrupted = readouts(
        model,
        tokens,
        span,
        noise,
        _TraceSpec(kinds, layers, positions, window, answer_id, foil_id),
        progress,
    )
    return {
        kind: _result(
            model,
            prompt,
            subject,
            answer,
            foil,
            tokens,
            span,
            grids[kind],
            clean,
            corrupted,
            replace(settings, kind=kind),
        )
        for kind in kinds
    }


def _show_options(public, implementation) -> None:
    """Give ``public(..., **options)`` the signature of the options it forwards, so that Jupyter's
    and Colab's signature help list them (``samples``, ``foil``, ...) instead of ``**options``."""
    own = [
        p
        for p in inspect.signature(public).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    names = {p.name for p in own}
    options = [
        p
        for p in inspect.signature(implementation).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in names
    ]
    public.__signature__ = inspect.signature(public).replace(parameters=own + options)


for _public in (trace, trace_all_kinds, trace_reference):
    _show_options(_public, _trace)


@dataclass(frozen=True)
class _TraceSpec:
    """What an engine traces: the cells (layer, position) of each kind, and what it reads out."""

    kinds: tuple[str, ...]
    layers: list[int]
    positions: list[int]
    window: int
    answer_id: int
    foil_id: int | None


def _progress(iterable, enabled: bool, unit: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, unit=unit, leave=False)


# --------------------------------------------------------------------------------------------
# Reference engine: ROME's loop, one bridge forward per cell
# --------------------------------------------------------------------------------------------


def _reference_readouts(model, tokens, span, noise, spec: _TraceSpec, progress: bool):
    """Readout grids ``{kind: [3, layer, pos]}`` and the clean and corrupted readouts [3] (means
    over the noise samples), one bridge forward pass per cell.

    Both interventions are lesson 02's ``make_patch_from``: the corruption patches the noised
    subject embeddings (the clean ones plus ``noise``) into ``hook_embed``; a restore patches the
    clean run's activation at one position into each restored layer."""
    n_layers, n_pos, samples = model.cfg.n_layers, tokens.shape[1], noise.shape[0]
    names = tuple(HOOK_OF_KIND[kind] for kind in spec.kinds)
    logits, cache = model.run_with_cache(
        tokens, names_filter=lambda name: name == "hook_embed" or name.endswith(names)
    )
    clean = _readout(logits[:, -1], spec.answer_id, spec.foil_id)[0]
    noised = cache["hook_embed"].repeat(samples, 1, 1)  # [sample, pos, d_model]
    noised[:, span[0] : span[1]] += noise.to(noised)
    corrupt = [("hook_embed", make_patch_from({"hook_embed": noised}, "hook_embed", range(*span)))]
    batch = tokens.expand(samples, n_pos)

    def readout(hooks):  # [3]: the metrics averaged over the noise samples
        out = model.run_with_hooks(batch, fwd_hooks=corrupt + hooks)
        return _readout(out[:, -1], spec.answer_id, spec.foil_id).mean(0)

    corrupted = readout([])
    grids = {}
    for kind in spec.kinds:
        grids[kind] = torch.full((3, n_layers, n_pos), float("nan"))
        todo = [(layer, pos) for pos in spec.positions for layer in spec.layers]
        for layer, pos in _progress(todo, progress, "cells"):
            names = [
                f"blocks.{restored}.{HOOK_OF_KIND[kind]}"
                for restored in window_layers(layer, n_layers, kind, spec.window)
            ]
            grids[kind][:, layer, pos] = readout(
                [(name, make_patch_from(cache, name, pos)) for name in names]
            )
    return grids, clean, corrupted


# --------------------------------------------------------------------------------------------
# Fast engine: the model's own weights (fast_forward), only the work a restore can change
# --------------------------------------------------------------------------------------------


def _embed_runs(tokens, span, noise, w: Weights):
    """The clean embeddings (batch 1) and the corrupted ones (one row per noise sample) of the fast
    engine."""
    embeds = w.embed[tokens[0].to(w.embed.device)][None]  # [1, pos, d_model]
    noisy = embeds.repeat(noise.shape[0], 1, 1)
    noisy[:, span[0] : span[1]] += noise.to(noisy)
    return embeds, noisy


def _fast_readouts(model, tokens, span, noise, spec: _TraceSpec, progress: bool):
    """As ``_reference_readouts``, from the fast engine: per token, all its cells in one batch."""
    n_pos, samples = tokens.shape[1], noise.shape[0]
    w = Weights(model)
    embeds, noisy = _embed_runs(tokens, span, noise, w)
    ids = spec.answer_id, spec.foil_id
    clean = full_run(w, embeds)
    clean_metrics = _readout(final_logits(w, clean.resid[-1][:, -1]), *ids)[0]
    corrupted = full_run(w, noisy)
    corrupted_metrics = _readout(final_logits(w, corrupted.resid[-1][:, -1]), *ids).mean(0)
    rows = [(kind, pos) for kind in spec.kinds for pos in spec.positions]
    grids = {kind: torch.full((3, w.n_layers, n_pos), float("nan")) for kind in spec.kinds}
    for kind, pos in _progress(rows, progress, "token"):
        if pos < span[0]:
            # before the noise: clean and corrupted states are equal, a restore changes nothing
            grids[kind][:, spec.layers, pos] = corrupted_metrics[:, None]
        else:
            clean_prefix = kind == "hidden" and pos == span[0] and pos + 1 < n_pos
            grids[kind][:, spec.layers, pos] = _trace_position(
                w, clean, corrupted, pos, kind, spec, samples, clean_prefix
            )
    return grids, clean_metrics, corrupted_metrics


def _cell_schedule(
    w: Weights, clean: Run, corrupted: Run, pos: int, layer: int, kind: str, window: int
):
    """Where a restored run first differs from the corrupted one, and how.

    Returns ``(birth, entry, patched)``: the run equals the corrupted run before block ``birth``
    except at ``pos``, where its state entering block ``birth`` is ``entry`` ([sample, d_model]);
    ``patched`` is the range of later blocks whose sub-layer output at ``pos`` is restored. For MLP
    and attention kinds the first restored block is worked out here: it changes only position
    ``pos`` (later positions read the block's unchanged input), so the restored run starts one block
    later."""
    if kind == "hidden":
        return layer + 1, clean.resid[layer + 1][0, pos], range(0)
    restored = window_layers(layer, w.n_layers, kind, window)
    first = restored[0]
    resid = corrupted.resid[first][:, pos]
    if kind == "mlp":
        entry = (resid + corrupted.attn_out[first][:, pos]) + clean.mlp_out[first][0, pos]
    else:
        mid = resid + clean.attn_out[first][0, pos]
        entry = mid + mlp(w, first, mid)
    return first + 1, entry, range(first + 1, restored[-1] + 1)


@torch.no_grad()
def _trace_position(
    w: Weights, clean: Run, corrupted: Run, pos, kind, spec, samples, clean_prefix=False
):
    """Readouts [3, len(spec.layers)] (see ``_readout``, averaged over samples) of the cells
    (layer, pos) of ``kind`` for every layer in ``spec.layers``, all in one batch that grows as
    cells are born (block by block) and shares rows between cells whose runs are still identical.

    ``clean_prefix`` (hidden states at the first noised position only): every position up to ``pos``
    is clean after the restore, so ``pos`` joins the cached prefix of keys and values and only later
    positions are computed."""
    n_layers, n_pos = w.n_layers, corrupted.resid[0].shape[1]
    first = pos + 1 if clean_prefix else pos  # first computed position
    device = corrupted.resid[0].device
    state = Pass.over(w, first, n_pos, device)
    schedule = [
        _cell_schedule(w, clean, corrupted, pos, layer, kind, spec.window) for layer in spec.layers
    ]
    out = torch.empty(3, len(spec.layers))
    # a group: cells whose runs are identical so far, sharing `samples` rows of x
    groups: list[list[int]] = []
    x = None
    for layer in range(n_layers + 1):
        newborn: dict[int, list[int]] = {}
        for i, (birth, _entry, patched) in enumerate(schedule):
            if birth == layer:
                # cells born in the same block with the same window start enter with the same state
                newborn.setdefault(patched.start if kind != "hidden" else i, []).append(i)
        for cells in newborn.values():
            start = corrupted.resid[layer][:, first:].clone()  # [sample, q, d_model]
            if not clean_prefix:
                start[:, 0] = schedule[cells[0]][1]
            if layer == n_layers:  # restored after the final block: only the last position is read
                start = start[:, -1:]
            x = start if x is None else torch.cat([x, start])
            groups.append(cells)
        if x is None:
            continue
        if layer == n_layers:
            break
        # split groups whose cells disagree on restoring at this block
        split, rows, restoring = [], [], []
        for g, cells in enumerate(groups):
            active = [i for i in cells if layer in schedule[i][2]]
            for part, flag in ((active, True), ([i for i in cells if i not in active], False)):
                if part:
                    split.append(part)
                    rows.append(g)
                    restoring.append(flag)
        if len(split) != len(groups):
            index = (
                torch.tensor(rows, device=device)[:, None] * samples
                + torch.arange(samples, device=device)
            ).flatten()
            x = x[index]
        groups = split
        k_prefix, v_prefix = corrupted.keys[layer][:, :, :pos], corrupted.values[layer][:, :, :pos]
        if clean_prefix:  # the restored position itself is clean from here on
            k_prefix = torch.cat(
                [k_prefix, clean.keys[layer][:, :, pos : pos + 1].expand(samples, -1, -1, -1)], 2
            )
            v_prefix = torch.cat(
                [v_prefix, clean.values[layer][:, :, pos : pos + 1].expand(samples, -1, -1, -1)], 2
            )
        prefix = (k_prefix.repeat(len(groups), 1, 1, 1), v_prefix.repeat(len(groups), 1, 1, 1))
        patch = None
        on = torch.tensor(restoring, device=device).repeat_interleave(samples)
        if on.any():
            source = clean.attn_out if kind == "attn" else clean.mlp_out
            patch = Patch(kind, on, source[layer][0, pos])
        x, *_ = block(state, layer, x, prefix, patch, last_only=layer == n_layers - 1)
    metrics = (
        _readout(final_logits(w, x[:, -1]), spec.answer_id, spec.foil_id)
        .view(len(groups), samples, 3)
        .mean(1)
        .cpu()
    )
    for g, cells in enumerate(groups):
        out[:, torch.tensor(cells)] = metrics[g][:, None]
    return out


# --------------------------------------------------------------------------------------------
# Attribution patching: one backward pass approximates every hidden-state cell
# --------------------------------------------------------------------------------------------


def attribution_patching(
    model,
    prompt: str,
    subject: str,
    answer: str,
    *,
    metric: str = "log_prob",
    foil: str | None = None,
    samples: int = DEFAULT_SAMPLES,
    noise_scale: float | None = None,
    seed: int = DEFAULT_SEED,
    noise: Tensor | None = None,
) -> Float[Tensor, "layer pos"]:
    """Linear estimate of the hidden-state trace's effect ``trace(...).effect(metric)`` for every
    (layer, pos) at once.

    For each noise sample s, restoring cell (l, t) changes the residual there by
    ``delta_s = clean[l, t] - corrupted_s[l, t]``; to first order the sample's metric m_s changes by
    ``grad_s[l, t] · delta_s``, where ``grad_s`` is the gradient of m_s in the corrupted run.
    Averaged over samples, like the exact trace. One forward and one backward pass in all.

    metric: ``"log_prob"`` (default), ``"logit_diff"`` (logit(answer) − logit(foil); needs ``foil``)
    or ``"prob"``. p(answer) is a poor choice when the corrupted p is near 0: the softmax is flat
    there, so the gradient, and with it the estimate, is far too small. Noise arguments as for
    ``trace``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if metric == "logit_diff" and foil is None:
        raise ValueError("metric='logit_diff' needs a foil, a competing answer such as ' Rome'")
    tokens, answer_id, foil_id, span, noise, _ = _prepare(
        model,
        prompt,
        subject,
        answer,
        "hidden",
        samples,
        noise_scale,
        seed,
        DEFAULT_WINDOW,
        noise,
        foil,
    )
    w = Weights(model)
    embeds, noisy = _embed_runs(tokens, span, noise, w)
    with torch.no_grad():
        clean = full_run(w, embeds)
    state = Pass.over(w, 0, tokens.shape[1], noisy.device)
    x, states = noisy.requires_grad_(), []
    with torch.enable_grad():
        for layer in range(w.n_layers):
            x, *_ = block(state, layer, x)
            x.retain_grad()
            states.append(x)
        per_sample = _readout(final_logits(w, x[:, -1]), answer_id, foil_id)[
            :, METRICS.index(metric)
        ]
        # the samples are independent, so the gradient of their sum is each sample's own gradient
        per_sample.sum().backward()
    estimate = torch.stack(
        [
            ((clean.resid[layer + 1] - state.detach()) * state.grad).sum(-1).mean(0)
            for layer, state in enumerate(states)
        ]
    )
    return estimate.detach().cpu()
