"""GENERATED from solutions/02_hooks.ipynb by `make notebooks` — do not edit.

The cells marked `#| export hooks` there are the only text of this code: edit them,
then run `make notebooks` (python -m course_utils.exercises generate).
"""

import torch
from course_utils.positions import check_activation, hook_name, normalize_positions

__all__ = ["make_zero_ablation", "make_mean_ablation", "make_patch_from"]


# solutions/02_hooks.ipynb, cell 42 (ex02_make_zero_ablation)
def make_zero_ablation(positions):
    """Return hook_fn(activation, hook) -> copy of activation with activation[:, positions] = 0.

    activation: Float[Tensor, "batch pos d_model"]; positions: an int or a list of ints (pos).
    """
    index = normalize_positions(positions)  # an int, a list, a range or a slice; readable errors

    def zero_ablation_hook(activation, hook=None):
        check_activation(activation, index, hook)  # dim 1 must be pos, the positions must exist
        ablated = activation.clone()
        ablated[:, index] = 0.0
        return ablated

    return zero_ablation_hook


# solutions/02_hooks.ipynb, cell 45 (ex02_make_mean_ablation)
def make_mean_ablation(mean, positions):
    """Return hook_fn(activation, hook) -> copy of activation with activation[:, positions] = mean.

    mean: Float[Tensor, "d_model"] (or one row per position); activation:
    Float[Tensor, "batch pos d_model"].
    """
    if not isinstance(mean, torch.Tensor):
        raise TypeError(f"mean must be a tensor, got {type(mean).__name__}")
    index = normalize_positions(positions)
    mean = mean.detach().clone()  # the hook's own copy: editing the caller's tensor changes nothing

    def mean_ablation_hook(activation, hook=None):
        check_activation(activation, index, hook)
        ablated = activation.clone()
        target_shape = ablated[:, index].shape
        try:
            torch.broadcast_shapes(mean.shape, target_shape)
        except RuntimeError:
            raise ValueError(
                f"{hook_name(hook)}: mean has shape {tuple(mean.shape)} but activation[:, "
                f"positions] has shape {tuple(target_shape)} [batch, n_positions, ...]; pass a "
                "[d_model] vector or one row per selected position"
            ) from None
        ablated[:, index] = mean.to(device=ablated.device, dtype=ablated.dtype)
        return ablated

    return mean_ablation_hook


# solutions/02_hooks.ipynb, cell 48 (ex02_make_patch_from)
def make_patch_from(cache, name, positions):
    """Return hook_fn(activation, hook) -> copy of activation with [:, positions] taken from
    cache[name].

    cache[name]: Float[Tensor, "1 pos d_model"]; activation: Float[Tensor, "batch pos d_model"].
    """
    index = normalize_positions(positions)
    try:
        source = cache[name]
    except KeyError:
        keys = list(cache.keys()) if hasattr(cache, "keys") else []
        shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
        raise KeyError(
            f"{name!r} is not in the cache (it holds {len(keys)} names: {shown}). Cache it with "
            f"run_with_cache(tokens, names_filter=[{name!r}])."
        ) from None
    if not isinstance(source, torch.Tensor):
        raise TypeError(f"cache[{name!r}] should be a tensor, got {type(source).__name__}")
    source = source.detach()

    def patch_hook(activation, hook=None):
        check_activation(activation, index, hook)
        if source.ndim != activation.ndim or source.shape[1:] != activation.shape[1:]:
            raise ValueError(
                f"{hook_name(hook)}: cached {name!r} has shape {tuple(source.shape)}, the "
                f"activation {tuple(activation.shape)}. Patch between prompts with the same "
                "number of tokens, at the hook point you cached."
            )
        if source.shape[0] not in (1, activation.shape[0]):
            raise ValueError(
                f"{hook_name(hook)}: cached batch size {source.shape[0]} cannot fill a batch of "
                f"{activation.shape[0]}; cache one prompt (batch 1) or the same batch size"
            )
        patched = activation.clone()
        patched[:, index] = source[:, index].to(device=patched.device, dtype=patched.dtype)
        return patched

    return patch_hook
