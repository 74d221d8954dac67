"""Hook factories and hook hygiene (lesson 02).

A hook is a function ``hook_fn(activation, hook) -> new activation or None`` attached to a named
hook point of a ``TransformerBridge`` (``"hook_embed"``, ``"blocks.5.hook_resid_pre"``...).
Returning a tensor replaces the activation for the rest of the forward pass; returning ``None``
keeps it.

The factories build hooks from a few settings (which positions, which replacement) and return a
closure, so one line attaches an intervention::

    model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", make_zero_ablation([2, 3, 4]))])

``make_zero_ablation``, ``make_mean_ablation`` and ``make_patch_from`` are lesson 02's exercises:
their only text is the lesson's solution cells (marked ``#| export hooks``), imported here from the
generated ``course_utils.from_solutions.hooks``. ``make_noise_hook`` is written here. Every one of
these hooks, through the input checks of ``course_utils.positions``:

* indexes the ``pos`` dimension, which is dim 1 of ``[batch, pos, ...]`` activations (the residual
  stream, ``hook_attn_out``, ``hook_mlp_out``, ``attn.hook_z``...); attention patterns and scores
  (``[batch, n_heads, pos, pos]``) are refused with a message instead of being edited on the wrong
  axis;
* returns a new tensor and never edits its input in place. Neighbouring hook points can share
  storage (``blocks.4.hook_resid_post`` *is* ``blocks.5.hook_resid_pre``), so an in-place edit would
  also rewrite activations you cached earlier;
* checks its positions against the activation and says what was expected when they do not fit.

``positions`` is an ``int``, a list/tuple/range of ints (negative ints count from the end) or a
``slice``; an empty list is refused because it is almost always a bug.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .from_solutions.hooks import make_mean_ablation, make_patch_from, make_zero_ablation
from .positions import HookFn, Positions, check_activation, normalize_positions

__all__ = [
    "answer_probs_with_hooks",
    "attached_hook_count",
    "hook_names",
    "make_mean_ablation",
    "make_noise_hook",
    "make_patch_from",
    "make_zero_ablation",
]


def make_noise_hook(
    positions: Positions,
    scale: float,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
) -> HookFn:
    """A hook adding Gaussian noise with standard deviation ``scale`` to
    ``activation[:, positions]``.

    With ``seed`` (the default, 0) every forward pass gets the same noise, so a run repeats exactly;
    with a CPU ``generator`` each forward pass draws fresh noise from it (reproducible when you seed
    the generator). Noise is drawn on the CPU, then moved, so it is the same on every device.
    activation: Float[Tensor, "batch pos ..."] -> the same shape, a new tensor.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 0:
        raise ValueError(
            f"scale must be a number >= 0 (the noise's standard deviation), got {scale!r}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator is None and seed is None:
        raise ValueError(
            "pass a seed (same noise every run) or a generator (fresh noise every run)"
        )
    index = normalize_positions(positions)

    def noise_hook(activation: Tensor, hook: Any = None) -> Tensor:
        check_activation(activation, index, hook)
        noised = activation.clone()
        target = noised[:, index]
        rng = generator if generator is not None else torch.Generator().manual_seed(seed)
        noise = torch.randn(target.shape, generator=rng, dtype=torch.float32) * float(scale)
        noised[:, index] = target + noise.to(device=noised.device, dtype=noised.dtype)
        return noised

    return noise_hook


# ---- hook points and hygiene ---------------------------------------------------------------------


def hook_names(model, match: str | Callable[[str], bool] | None = None) -> list[str]:
    """Names of the model's hook points, in the bridge's order, optionally filtered.

    match: a substring (``"resid_pre"``) or a predicate ``name -> bool``. The list holds both the
    TransformerLens names (``blocks.0.hook_resid_pre``) and the bridge's own aliases of the same
    points (``blocks.0.hook_in``); either works in ``run_with_hooks``.
    """
    names = list(model.hook_dict)
    if match is None:
        return names
    if isinstance(match, str):
        return [n for n in names if match in n]
    if callable(match):
        return [n for n in names if match(n)]
    raise TypeError(f"match must be a substring, a predicate or None, got {type(match).__name__}")


def attached_hook_count(model, including_permanent: bool = True) -> int:
    """How many hook functions are attached to the model right now (forward and backward).

    Outside a ``with model.hooks(...)`` block this should be 0 (plus your permanent hooks); anything
    else is a hook left behind, usually by ``add_hook`` followed by an exception.
    """
    seen: set[int] = set()
    count = 0
    for point in model.hook_points():
        if id(point) in seen:
            continue
        seen.add(id(point))
        for handle in [*point.fwd_hooks, *point.bwd_hooks]:
            if including_permanent or not handle.is_permanent:
                count += 1
    return count


@torch.no_grad()
def answer_probs_with_hooks(
    model,
    tokens: Int[Tensor, "batch pos"],
    answer_id: int,
    fwd_hooks: Sequence[tuple[Any, HookFn]] = (),
) -> Float[Tensor, " batch"]:
    """p(answer) at the last position of each prompt, with ``fwd_hooks`` attached for this one
    run."""
    logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))
    return logits[:, -1].float().softmax(dim=-1)[:, answer_id]
