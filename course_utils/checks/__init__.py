"""In-notebook checks: compare a learner's function or value with an independent truth.

Every exercise in a lesson is followed by a cell such as ``checks.check_embed(embed)``. A check
runs the learner's code on fixed inputs, compares the result with the truth (usually the model's
own forward pass, cached activations or a PyTorch built-in) and prints one line:

    ✅ 01.1 embed: matches hook_embed (max |diff| 0.0e+00 ≤ atol 1e-05) — visible checks only; hidden tests run at grading
    ❌ 01.1 embed: wrong shape: expected (1, 11, 576) [batch pos d_model], got (11, 576). Hint: keep the batch dimension.

A failing check raises ``CheckFailed`` (an ``AssertionError``) after printing, so nbgrader and the
course grader count it as failed; its traceback is hidden by IPython so the learner sees the line.

Lesson-specific checks live in the submodules (``checks.residual_stream``, ``checks.hooks``...).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RESULTS: list[CheckResult] = []  # every check run in this process, in order (read by the grader)


@dataclass
class CheckResult:
    """The outcome of one check. ``max_abs_diff`` is set when tensors were compared."""

    exercise: str
    passed: bool
    message: str
    max_abs_diff: float | None = None

    def line(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.exercise}: {self.message}"

    def to_dict(self) -> dict:
        return {
            "exercise": self.exercise,
            "passed": self.passed,
            "message": self.message,
            "max_abs_diff": self.max_abs_diff,
        }


class CheckFailed(AssertionError):
    """Raised by a failing check; ``.result`` holds the ``CheckResult``."""

    def __init__(self, result: CheckResult):
        super().__init__(result.line())
        self.result = result

    def _render_traceback_(self) -> list[str]:
        """IPython calls this instead of printing a traceback: the ❌ line above says what is wrong
        and a traceback into the check's own code would only bury it."""
        return [
            f"CheckFailed: {self.result.exercise} did not pass (see the ❌ line above); fix the "
            "exercise and re-run."
        ]


class _Fail(Exception):
    """Internal: stops a check early with a learner-facing message."""

    def __init__(self, message: str, max_abs_diff: float | None = None):
        super().__init__(message)
        self.message = message
        self.max_abs_diff = max_abs_diff


HIDDEN_NOTE = "visible checks only; hidden tests run at grading"

_GRADING_SEED: int | None = (
    None  # set by the grader only (course_utils.grading); None in a notebook
)


def set_grading_seed(seed: int | None) -> int | None:
    """Set the seed hidden tests draw their inputs from; returns the previous one (grader use)."""
    global _GRADING_SEED
    previous, _GRADING_SEED = _GRADING_SEED, seed
    return previous


def hidden_rng(exercise: str):
    """A ``random.Random`` for a hidden test's inputs while grading, else None (fixed inputs).

    The grader draws a fresh seed per batch, so no table of answers written in advance covers the
    inputs; in a notebook a hidden test keeps its fixed inputs and behaves as before.
    """
    import random

    if _GRADING_SEED is None:
        return None
    return random.Random(f"{_GRADING_SEED}:{exercise}")


_PROMPT_WORDS = (
    "river",
    "castle",
    "teacher",
    "garden",
    "engine",
    "village",
    "market",
    "doctor",
    "winter",
    "island",
    "bridge",
    "forest",
    "painter",
    "station",
    "library",
    "ocean",
    "mountain",
    "kitchen",
    "soldier",
    "harbor",
    "farmer",
    "window",
    "temple",
    "desert",
    "museum",
    "captain",
    "valley",
    "tower",
    "student",
    "palace",
    "garage",
    "planet",
)
_PROMPT_TEMPLATES = (
    "The {0} near the {1} was built by the {2}",
    "My {0} told the {1} that the {2}",
    "In the {0}, the old {1} and the {2} are",
    "The {0} and the {1} of the {2} were",
)


def random_prompt(rng) -> str:
    """A short English prompt drawn by ``rng``: 4 templates x 32*31*30 word choices (about
    120,000)."""
    return rng.choice(_PROMPT_TEMPLATES).format(*rng.sample(_PROMPT_WORDS, 3))


def run_check(
    exercise: str, body: Callable[[], str | tuple[str, float]], hidden_tests: bool = True
) -> None:
    """Run ``body`` (which returns a success message, or raises ``_Fail``), print and record the
    result.

    Returns nothing, so a check cell shows only the printed line; the result is ``RESULTS[-1]``.

    Warnings raised inside the learner's code are shown but never fail a check.
    """
    __tracebackhide__ = True
    diff = None
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            outcome = body()
            if isinstance(outcome, tuple):
                message, diff = outcome
            else:
                message = outcome
            if hidden_tests:
                message = f"{message} — {HIDDEN_NOTE}"
            result = CheckResult(exercise, True, message, diff)
        except _Fail as failure:
            result = CheckResult(exercise, False, failure.message, failure.max_abs_diff)
    RESULTS.append(result)
    print(result.line())
    if not result.passed:
        raise CheckFailed(result)


def call(fn: Any, *args, name: str | None = None, **kwargs):
    """Call the learner's ``fn``, turning the usual stub and coding errors into a readable
    failure."""
    __tracebackhide__ = True
    label = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise _Fail(f"expected a function for `{label}`, got {type(fn).__name__}")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _Fail(
            f"`{label}` is not implemented yet: replace `raise NotImplementedError()` with your "
            "code"
        ) from None
    except _Fail:
        raise
    except Exception as error:  # the learner's bug, reported rather than re-raised
        raise _Fail(f"`{label}` raised {type(error).__name__}: {error}") from None


def expect(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise _Fail(message)


def compare_tensors(
    actual: Any,
    expected,
    *,
    what: str,
    atol: float,
    rtol: float = 0.0,
    dims: str = "",
    hint: str = "",
) -> float:
    """Compare a learner's tensor with the truth: type, then shape, then dtype, then values.

    Returns the max absolute difference; raises ``_Fail`` with a targeted message otherwise.
    ``dims`` names the expected dimensions (e.g. ``"batch pos d_model"``) for the message.
    """
    import torch

    hint_text = f" Hint: {hint}" if hint else ""
    if not isinstance(actual, torch.Tensor):
        raise _Fail(f"{what}: expected a torch.Tensor, got {type(actual).__name__}.{hint_text}")
    if actual.shape != expected.shape:
        named = f" [{dims}]" if dims else ""
        raise _Fail(
            f"{what}: wrong shape: expected {tuple(expected.shape)}{named}, got "
            f"{tuple(actual.shape)}.{hint_text}"
        )
    if actual.dtype != expected.dtype:
        raise _Fail(
            f"{what}: wrong dtype: expected {expected.dtype}, got {actual.dtype}.{hint_text}"
        )
    actual = actual.detach().to(expected.device)
    diff = (actual - expected.detach()).abs()
    max_diff = float(diff.max()) if diff.numel() else 0.0
    try:
        torch.testing.assert_close(actual, expected.detach(), atol=atol, rtol=rtol)
    except AssertionError:
        where = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0]) if diff.numel() else ()
        raise _Fail(
            f"{what}: values differ: max |diff| = {max_diff:.3g} at index {where} "
            f"(tolerance atol={atol:g}, rtol={rtol:g}).{hint_text}",
            max_diff,
        ) from None
    return max_diff


def tolerance_text(max_diff: float, atol: float) -> str:
    return f"max |diff| {max_diff:.1e} ≤ atol {atol:g}"
