"""GENERATED from solutions/00_first_look.ipynb by `make notebooks` — do not edit.

The cells marked `#| export predictions` there are the only text of this code: edit them,
then run `make notebooks` (python -m course_utils.exercises generate).
"""

import torch

__all__ = ["next_token_probs", "top_k"]


# solutions/00_first_look.ipynb, cell 16 (ex00_next_token_probs)
def next_token_probs(model, prompt: str) -> torch.Tensor:
    """Float[Tensor, "d_vocab"]: softmax of the logits at the last position of `prompt`."""
    with torch.no_grad():
        logits = model(model.to_tokens(prompt))  # [batch=1, pos, d_vocab]
    return logits[0, -1].softmax(dim=-1)


# solutions/00_first_look.ipynb, cell 19 (ex00_top_k)
def top_k(model, prompt: str, k: int = 5) -> list[tuple[str, float]]:
    """The k most likely next tokens and their probabilities, most likely first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    values, indices = next_token_probs(model, prompt).topk(k)
    return [
        (model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=False)
    ]
