"""In-notebook checks: compare a learner's function or value with an independent truth.

Every exercise in a lesson is followed by a cell such as ``checks.check_embed(embed)``. A check
runs the learner's code on fixed inputs, compares the result with the truth (usually the model's
own forward pass, cached activations or a PyTorch built-in) and prints one line:

    ✅ 01.1 embed: matches hook_embed on 2 prompts (max |diff| ≤ atol 1e-06) — visible checks only; hidden tests run at grading
    ❌ 01.1 embed: wrong shape: expected (1, 11, 576) [batch pos d_model], got (11, 576). Hint: keep the batch dimension.

A failing check raises ``CheckFailed`` (an ``AssertionError``) after printing, so nbgrader and the
course grader count it as failed; its traceback is hidden by IPython so the learner sees the line.

One policy for numbers: a success line states the tolerance the check holds the learner to
(``within(atol, rtol)``), never the measured difference, which varies with the CPU and the thread
count while a printed line must not (notebooks are tested with strict nbval). ``run_check`` keeps
the largest difference measured by the check's comparisons in ``RESULTS[-1].max_abs_diff``; a
failure message does show the measured difference, since that is what the learner needs.

Hidden tests (a check called with ``hidden`` true) draw their inputs from ``hidden_rng(exercise)``
while grading, so a table of answers for inputs written here cannot score; in a notebook they keep
fixed inputs.

Lesson-specific checks live in the submodules (``checks.residual_stream``, ``checks.hooks``...).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

RESULTS: list[CheckResult] = []  # every check run in this process, in order (read by the grader)


@dataclass
class CheckResult:
    """The outcome of one check. ``max_abs_diff``: the largest difference the check measured
    (``compare_tensors``, ``measured``), or the one that failed; None if it measured none."""

    exercise: str
    passed: bool
    message: str
    max_abs_diff: float | None = None

    def line(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.exercise}: {self.message}"


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


class Fail(Exception):
    """Raised inside a check's body to stop it with a learner-facing message (``run_check`` turns
    it into a ❌ line); ``max_abs_diff`` is the measured difference that failed, if any."""

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


@contextmanager
def grading_seed(seed: int | None):
    """``set_grading_seed(seed)`` for the with-block, then the previous seed again (tests)."""
    previous = set_grading_seed(seed)
    try:
        yield
    finally:
        set_grading_seed(previous)


def hidden_rng(exercise: str, hidden: bool = True):
    """A ``random.Random`` for a hidden test's inputs while grading, else None (fixed inputs).

    The grader draws a fresh seed per batch, so no table of answers written in advance covers the
    inputs; in a notebook a hidden test keeps its fixed inputs and behaves as before. A visible
    check (``hidden=False``) always gets None. The same ``exercise`` and seed give the same draws,
    in the learner's kernel and in the grader alike.
    """
    import random

    if _GRADING_SEED is None or not hidden:
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


def random_fact(rng) -> dict:
    """One of the course's known facts (``course_utils.facts``: the model ranks the answer first),
    for hidden tests that need the model to know the answer (corruption, tracing, heads)."""
    from ..facts import load_facts

    return rng.choice(load_facts())


def random_fact_pair(rng, n_tokens: Callable[[str], int]) -> tuple[dict, dict]:
    """Two known facts of the same relation with different answers and prompts of the same length
    (``n_tokens(prompt)``), so one can be patched into the other (clean and corrupted runs)."""
    from ..facts import load_facts

    for _ in range(1000):  # most relations have several facts of each length
        fact = random_fact(rng)
        others = [
            other
            for other in load_facts()
            if other["relation"] == fact["relation"]
            and other["answer"] != fact["answer"]
            and n_tokens(other["prompt"]) == n_tokens(fact["prompt"])
        ]
        if others:
            return fact, rng.choice(others)
    raise RuntimeError("no two known facts share a relation and a length")


def random_prompt(rng) -> str:
    """A short English prompt drawn by ``rng``: 4 templates x 32*31*30 word choices (about
    120,000)."""
    return rng.choice(_PROMPT_TEMPLATES).format(*rng.sample(_PROMPT_WORDS, 3))


_MEASURED: list[float] | None = None  # differences measured by the running check (run_check)


def run_check(exercise: str, body: Callable[[], str], hidden: bool = False) -> None:
    """Run ``body`` (which returns a success message, or raises ``Fail``), print and record the
    result.

    ``hidden`` says that this run is the exercise's hidden test: its line does not add the note
    that hidden tests run at grading. The largest difference measured by ``compare_tensors`` and
    ``measured`` during ``body`` is recorded as the result's ``max_abs_diff`` (a failure records
    the difference that failed). Returns nothing, so a check cell shows only the printed line; the
    result is ``RESULTS[-1]``.

    Warnings raised inside the learner's code are shown but never fail a check.
    """
    __tracebackhide__ = True
    global _MEASURED
    outer, _MEASURED = _MEASURED, []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            try:
                message = body()
                worst = max(_MEASURED, default=None)
                if not hidden:
                    message = f"{message} — {HIDDEN_NOTE}"
                result = CheckResult(exercise, True, message, worst)
            except Fail as failure:
                result = CheckResult(exercise, False, failure.message, failure.max_abs_diff)
    finally:
        _MEASURED = outer
    RESULTS.append(result)
    print(result.line())
    if not result.passed:
        raise CheckFailed(result)


def measured(diff: float) -> float:
    """Count ``diff``, a difference a check measured, towards its ``max_abs_diff``; returns it."""
    if _MEASURED is not None:
        _MEASURED.append(float(diff))
    return diff


def call(fn: Any, *args, name: str | None = None, **kwargs):
    """Call the learner's ``fn``, turning the usual stub and coding errors into a readable
    failure."""
    __tracebackhide__ = True
    label = name or getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise Fail(f"expected a function for `{label}`, got {type(fn).__name__}")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise Fail(
            f"`{label}` is not implemented yet: replace `raise NotImplementedError()` with your "
            "code"
        ) from None
    except Fail:
        raise
    except Exception as error:  # the learner's bug, reported rather than re-raised
        raise Fail(f"`{label}` raised {type(error).__name__}: {error}") from None


def expect(condition: bool, message: str) -> None:
    """Fail with ``message`` unless ``condition`` holds."""
    if not condition:
        raise Fail(message)


def expect_tensor(actual: Any, expected, *, what: str, dims: str = "", hint: str = "") -> None:
    """Fail with a targeted message unless ``actual`` is a tensor of ``expected``'s shape and dtype.

    ``dims`` names the expected dimensions (e.g. ``"batch pos d_model"``) for the message.
    """
    import torch

    hint_text = f" Hint: {hint}" if hint else ""
    if not isinstance(actual, torch.Tensor):
        raise Fail(f"{what}: expected a torch.Tensor, got {type(actual).__name__}.{hint_text}")
    if actual.shape != expected.shape:
        named = f" [{dims}]" if dims else ""
        raise Fail(
            f"{what}: wrong shape: expected {tuple(expected.shape)}{named}, got "
            f"{tuple(actual.shape)}.{hint_text}"
        )
    if actual.dtype != expected.dtype:
        raise Fail(
            f"{what}: wrong dtype: expected {expected.dtype}, got {actual.dtype}.{hint_text}"
        )


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
    """Compare a learner's tensor with the truth: type, shape and dtype (``expect_tensor``), then
    values.

    Returns the max absolute difference, which also counts towards the running check's
    ``max_abs_diff``; raises ``Fail`` with a targeted message otherwise.
    """
    import torch

    expect_tensor(actual, expected, what=what, dims=dims, hint=hint)
    actual = actual.detach().to(expected.device)
    diff = (actual - expected.detach()).abs()
    max_diff = float(diff.max()) if diff.numel() else 0.0
    try:
        torch.testing.assert_close(actual, expected.detach(), atol=atol, rtol=rtol)
    except AssertionError:
        where = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0]) if diff.numel() else ()
        raise Fail(
            f"{what}: values differ: max |diff| = {max_diff:.3g} at index {where} "
            f"(tolerance atol={atol:g}, rtol={rtol:g}).{f' Hint: {hint}' if hint else ''}",
            max_diff,
        ) from None
    return measured(max_diff)


def within(atol: float, rtol: float = 0.0) -> str:
    """The tolerance a passing check met, for its success line (see "One policy for numbers")."""
    return f"max |diff| ≤ atol {atol:g}" + (f", rtol {rtol:g}" if rtol else "")
