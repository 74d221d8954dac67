"""GENERATED from solutions/05_task_vectors.ipynb by `make notebooks` — do not edit.

The cells marked `#| export task_vectors` there are the only text of this code: edit them,
then run `make notebooks` (python -m course_utils.exercises generate).
"""

import torch

__all__ = ["make_patch_hook"]


# solutions/05_task_vectors.ipynb, cell 14 (ex05_make_patch_hook)
def make_patch_hook(vector: torch.Tensor, positions: torch.Tensor, mode: str = "replace"):
    """vector: Float[Tensor, "d_model"]; positions: Int[Tensor, "batch"].
    Returns hook(resid: Float[Tensor, "batch pos d_model"], hook) ->
    Float[Tensor, "batch pos d_model"]."""

    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")

    def hook(resid, hook=None):
        rows = torch.arange(resid.shape[0], device=resid.device)
        cols = positions.to(resid.device)
        value = vector.to(resid.device, resid.dtype)
        resid = resid.clone()
        if mode == "replace":
            resid[rows, cols] = value
        else:
            resid[rows, cols] = resid[rows, cols] + value
        return resid

    return hook
