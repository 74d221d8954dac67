"""Hook factories and hook hygiene (lesson 02).

A hook is a function ``hook_fn(activation, hook) -> new activation or None`` attached to a named
hook point of a ``TransformerBridge`` (``"hook_embed"``, ``"blocks.5.hook_resid_pre"``...).
Returning a tensor replaces the activation for the rest of the forward pass; returning ``None``
keeps it.

The factories below build hooks from a few settings (which positions, which replacement) and return
a closure, so one line attaches an intervention::

    model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", make_zero_ablation([2, 3, 4]))])

Every hook made here:

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

Positions = int | Sequence[int] | slice | Tensor
HookFn = Callable[[Tensor, Any], Tensor | None]

# hook points whose dim 1 is not `pos`: [batch, n_heads, query_pos, key_pos]
_NOT_POS_FIRST = ("hook_pattern", "hook_attn_scores")


# ---- positions -----------------------------------------------------------------------------------


def _normalize_positions(positions: Positions) -> list[int] | slice:
    """``positions`` as a list of ints or a slice; raises a readable error for anything else."""
    if isinstance(positions, slice):
        return positions
    if isinstance(positions, bool):
        raise TypeError("positions must be an int, a list of ints or a slice, not a bool")
    if isinstance(positions, int):
        return [positions]
    if isinstance(positions, Tensor):
        if positions.dtype in (torch.bool,) or positions.is_floating_point() or positions.ndim > 1:
            raise TypeError(
                f"a positions tensor must be 1-D integer, got dtype {positions.dtype}, "
                f"shape {tuple(positions.shape)}"
            )
        positions = positions.tolist()
    try:
        result = list(positions)  # a copy: later changes to the caller's list do not reach the hook
    except TypeError:
        raise TypeError(
            f"positions must be an int, a list of ints or a slice, got {type(positions).__name__}"
        ) from None
    if not result:
        raise ValueError(
            "positions is empty: the hook would change nothing. Pass at least one position."
        )
    for p in result:
        if isinstance(p, bool) or not isinstance(p, int):
            raise TypeError(f"positions must hold ints, got {p!r} ({type(p).__name__})")
    return result


def _hook_name(hook: Any) -> str:
    return getattr(hook, "name", None) or "this hook point"


def _check_activation(activation: Tensor, positions: list[int] | slice, hook: Any) -> None:
    """Refuse activations whose dim 1 is not ``pos`` and positions that do not exist."""
    name = _hook_name(hook)
    if not isinstance(activation, Tensor):
        raise TypeError(f"{name}: expected a tensor activation, got {type(activation).__name__}")
    if activation.ndim < 2:
        raise ValueError(
            f"{name}: activation has shape {tuple(activation.shape)}; position hooks need "
            "[batch, pos, ...] (did you drop the batch dimension?)"
        )
    if str(name).endswith(_NOT_POS_FIRST):
        raise ValueError(
            f"{name} is [batch, n_heads, query_pos, key_pos]; these hooks index dim 1 as pos. "
            "Hook a [batch, pos, ...] point (hook_resid_pre, hook_attn_out, attn.hook_z) instead."
        )
    if isinstance(positions, list):
        n_pos = activation.shape[1]
        bad = [p for p in positions if not -n_pos <= p < n_pos]
        if bad:
            raise IndexError(
                f"{name}: positions {bad} do not exist; the activation has shape "
                f"{tuple(activation.shape)} [batch, pos, ...], so pos runs from 0 to {n_pos - 1}"
            )


# ---- factories -----------------------------------------------------------------------------------


def make_zero_ablation(positions: Positions) -> HookFn:
    """A hook setting ``activation[:, positions]`` to zero.

    activation: Float[Tensor, "batch pos ..."] -> the same shape, a new tensor.
    """
    index = _normalize_positions(positions)

    def zero_ablation_hook(activation: Tensor, hook: Any = None) -> Tensor:
        _check_activation(activation, index, hook)
        ablated = activation.clone()
        ablated[:, index] = 0.0
        return ablated

    return zero_ablation_hook


def make_mean_ablation(mean: Tensor, positions: Positions) -> HookFn:
    """A hook replacing ``activation[:, positions]`` with ``mean``, the same for every batch item.

    mean: Float[Tensor, " d_model"] (one vector for every position) or
    Float[Tensor, "n_positions d_model"]
        (one per selected position); anything that broadcasts to ``activation[:, positions]``.
    activation: Float[Tensor, "batch pos ..."] -> the same shape, a new tensor.
    """
    if not isinstance(mean, Tensor):
        raise TypeError(f"mean must be a tensor, got {type(mean).__name__}")
    index = _normalize_positions(positions)
    mean = (
        mean.detach().clone()
    )  # the hook keeps its own copy: editing the caller's tensor changes nothing

    def mean_ablation_hook(activation: Tensor, hook: Any = None) -> Tensor:
        _check_activation(activation, index, hook)
        ablated = activation.clone()
        target_shape = ablated[:, index].shape
        try:
            torch.broadcast_shapes(mean.shape, target_shape)
        except RuntimeError:
            raise ValueError(
                f"{_hook_name(hook)}: mean has shape {tuple(mean.shape)} but activation[:, "
                "positions] "
                f"has shape {tuple(target_shape)} [batch, n_positions, ...]; pass a [d_model] "
                "vector "
                "or one row per selected position"
            ) from None
        ablated[:, index] = mean.to(device=ablated.device, dtype=ablated.dtype)
        return ablated

    return mean_ablation_hook


def make_patch_from(cache: Any, name: str, positions: Positions) -> HookFn:
    """A hook copying ``cache[name][:, positions]`` (from another run) into the activation.

    cache: an ``ActivationCache`` or a dict from ``run_with_cache`` on a prompt of the same length.
    name: the hook point that was cached; attach the hook at the same point.
    cache[name]: Float[Tensor, "batch pos ..."] with batch 1 (copied into every batch item) or the
        activation's batch size. The cached tensor is read, never written.
    activation: Float[Tensor, "batch pos ..."] -> the same shape, a new tensor.
    """
    index = _normalize_positions(positions)
    try:
        source = cache[name]
    except KeyError:
        keys = list(cache.keys()) if hasattr(cache, "keys") else []
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise KeyError(
            f"{name!r} is not in the cache (it holds {len(keys)} names: {shown}). Cache it with "
            f"run_with_cache(tokens, names_filter=[{name!r}])."
        ) from None
    if not isinstance(source, Tensor):
        raise TypeError(f"cache[{name!r}] should be a tensor, got {type(source).__name__}")
    source = source.detach()

    def patch_hook(activation: Tensor, hook: Any = None) -> Tensor:
        _check_activation(activation, index, hook)
        if source.ndim != activation.ndim or source.shape[1:] != activation.shape[1:]:
            raise ValueError(
                f"{_hook_name(hook)}: cached {name!r} has shape {tuple(source.shape)}, the "
                "activation "
                f"{tuple(activation.shape)}. Patch between prompts with the same number of tokens, "
                "at the hook point you cached."
            )
        if source.shape[0] not in (1, activation.shape[0]):
            raise ValueError(
                f"{_hook_name(hook)}: cached batch size {source.shape[0]} cannot fill a batch of "
                f"{activation.shape[0]}; cache one prompt (batch 1) or the same batch size"
            )
        patched = activation.clone()
        patched[:, index] = source[:, index].to(device=patched.device, dtype=patched.dtype)
        return patched

    return patch_hook


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
    index = _normalize_positions(positions)

    def noise_hook(activation: Tensor, hook: Any = None) -> Tensor:
        _check_activation(activation, index, hook)
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
