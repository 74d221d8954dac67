"""Positions and activations for position hooks: the input checks every hook factory uses.

Lesson 02's hook factories (``make_zero_ablation``, ``make_mean_ablation``, ``make_patch_from``,
whose solutions ``course_utils.hooks`` exports) and ``course_utils.hooks.make_noise_hook`` index the
``pos`` dimension, dim 1 of ``[batch, pos, ...]`` activations. Two helpers make that safe:

* ``normalize_positions(positions)`` turns an ``int``, a list/tuple/range of ints (negative ints
  count from the end), a 1-D integer tensor or a ``slice`` into an index, and refuses anything else
  (an empty list is almost always a bug) with a readable error;
* ``check_activation(activation, index, hook)`` refuses attention patterns and scores
  (``[batch, n_heads, pos, pos]``, whose dim 1 is not ``pos``), activations without a batch
  dimension and positions that do not exist, saying what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Positions = int | Sequence[int] | slice | Tensor
HookFn = Callable[[Tensor, Any], Tensor | None]

# hook points whose dim 1 is not `pos`: [batch, n_heads, query_pos, key_pos]
_NOT_POS_FIRST = ("hook_pattern", "hook_attn_scores")


# ---- positions -----------------------------------------------------------------------------------


def normalize_positions(positions: Positions) -> list[int] | slice:
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


def hook_name(hook: Any) -> str:
    return getattr(hook, "name", None) or "this hook point"


def check_activation(activation: Tensor, positions: list[int] | slice, hook: Any) -> None:
    """Refuse activations whose dim 1 is not ``pos`` and positions that do not exist."""
    name = hook_name(hook)
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
