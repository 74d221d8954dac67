"""Checks for lesson 02 (hooks: closures, hook points, run_with_hooks, run_with_cache).

The hook checks run the learner's hook twice: once on a small random tensor, where the usual bugs
have a clear signature (returned ``None``, edited its input in place, indexed the batch dimension
instead of ``pos``), and once inside the model, followed on the same hook point by a recording hook,
so the truth is the activation the rest of the model really received.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import SimpleNamespace

import torch

from . import (
    Fail,
    call,
    compare_tensors,
    expect,
    hidden_rng,
    random_prompt,
    run_check,
    within,
)

PROMPT = "The Eiffel Tower is located in the city of"  # 11 tokens with <|endoftext|>
SOURCE_PROMPT = "The Colosseum is located in the city of"  # also 11 tokens: patchable into PROMPT
HIDDEN_PROMPT = "The Great Wall is located in the country of"
HIDDEN_SOURCE_PROMPT = "The Taj Mahal is located in the country of"
_FAKE_HOOK = SimpleNamespace(name="blocks.3.hook_resid_pre")


# ---- helpers -------------------------------------------------------------------------------------


def _expect_callable(obj, what: str) -> None:
    if obj is None:
        raise Fail(
            f"{what} returned None. Hint: end the outer function with `return inner_function` "
            "(the name, without calling it)"
        )
    if not callable(obj):
        raise Fail(
            f"{what} should return a function, got {type(obj).__name__} {obj!r}. Hint: return the "
            "inner "
            "function itself, not the result of calling it"
        )


def _run_hook_on_tensor(
    hook_fn, activation: torch.Tensor, label: str, hook=_FAKE_HOOK
) -> torch.Tensor:
    """Call a learner's hook on a copy of ``activation`` and diagnose the classic mistakes."""
    given = activation.clone()
    if not callable(hook_fn):
        raise Fail(f"{label} should be a function, got {type(hook_fn).__name__}")
    try:
        out = hook_fn(
            given, hook=hook
        )  # how TransformerLens calls a hook: the hook point by keyword
    except NotImplementedError:
        raise Fail(
            f"{label} is not implemented yet: replace `raise NotImplementedError()` with your code"
        ) from None
    except TypeError as error:
        if "'hook'" in str(error):
            raise Fail(
                f"{label} cannot be called as hook_fn(activation, hook=hook_point): {error}. Hint: "
                "TransformerLens passes the hook point by keyword, so name the second parameter "
                "`hook`"
            ) from None
        raise Fail(f"{label} raised TypeError: {error}") from None
    except Exception as error:  # the learner's bug, reported rather than re-raised
        raise Fail(f"{label} raised {type(error).__name__}: {error}") from None
    edited_in_place = not torch.equal(given, activation)
    if out is None:
        if edited_in_place:
            raise Fail(
                f"{label} edited the activation in place and returned None. That changes any "
                "tensor sharing "
                "its storage, cached activations included (blocks.4.hook_resid_post *is* "
                "blocks.5.hook_resid_pre). Hint: `new = activation.clone()`, edit `new`, `return "
                "new`"
            )
        raise Fail(
            f"{label} returned None, so the model keeps the original activation and your edit is "
            "lost. "
            "Hint: end the hook with `return` and the edited tensor"
        )
    if edited_in_place:
        raise Fail(
            f"{label} changed its input tensor in place. Cached activations share storage with "
            "live ones, "
            "so this silently rewrites them. Hint: clone first (`new = activation.clone()`), edit "
            "the copy"
        )
    return out


def _diagnose_axis(
    out: torch.Tensor, expected: torch.Tensor, activation: torch.Tensor, positions, label: str
):
    """A targeted message when the hook edited dim 0 (batch) or the last dim instead of dim 1
    (pos)."""
    if (
        not isinstance(out, torch.Tensor)
        or out.shape != expected.shape
        or torch.allclose(out, expected, atol=1e-6)
    ):
        return
    changed = out != activation
    rows_batch = (
        sorted({int(i) for i in torch.nonzero(changed.any(dim=-1).any(dim=-1))[:, 0]})
        if changed.any()
        else []
    )
    rows_pos = (
        sorted({int(i) for i in torch.nonzero(changed.any(dim=-1).any(dim=0))[:, 0]})
        if changed.any()
        else []
    )
    if not changed.any():
        raise Fail(
            f"{label} changed nothing: positions {positions} of dim 1 (pos) should have changed"
        )
    if rows_batch != list(range(activation.shape[0])):
        raise Fail(
            f"{label} changed batch items {rows_batch} only, all of them should change at "
            "positions "
            f"{positions}. Hint: you indexed dim 0 (batch); index dim 1 with `activation[:, "
            "positions]`"
        )
    if rows_pos != sorted(p % activation.shape[1] for p in positions):
        raise Fail(
            f"{label} changed positions {rows_pos}, expected {positions}. Hint: index dim 1 "
            "(`activation[:, positions]`) and leave the other positions as they are"
        )


def _record_after(model, tokens, name: str, hook_fn, label: str):
    """Logits and the activation the model received at ``name`` after ``hook_fn`` ran."""
    record = {}

    def recorder(activation, hook):
        record["act"] = activation.detach().clone()

    def run():
        with torch.no_grad(), model.hooks(fwd_hooks=[(name, hook_fn), (name, recorder)]):
            return model(tokens)

    logits = call(run, name=label)
    return logits, record["act"]


def _drawn_site(rng) -> tuple[list[int], int]:
    """Two positions (not the BOS) and a layer for a hidden hook test, drawn while grading."""
    return sorted(rng.sample(range(1, 8), 2)), rng.randrange(1, 29)


def _ablation_site(
    exercise: str, hidden: bool, hidden_site: tuple[list[int], int]
) -> tuple[list[int], int, str]:
    """(positions, layer, prompt) of an ablation check: the visible site, the written hidden one in
    a notebook, or one drawn (with its prompt) while grading."""
    positions, layer = hidden_site if hidden else ([2, 3, 4], 3)
    prompt = HIDDEN_PROMPT if hidden else PROMPT
    rng = hidden_rng(exercise, hidden)
    if rng is not None:
        positions, layer = _drawn_site(rng)
        prompt = random_prompt(rng)
    return positions, layer, prompt


def _expect_written(
    model, tokens, name: str, hook_fn, positions, value, received=None, hint: str = ""
) -> None:
    """Fail unless the model, run with ``hook_fn`` at ``name``, received the clean activation with
    ``value`` written at ``positions`` (the recording hook runs after the learner's; ``received``:
    what it already recorded)."""
    if received is None:
        _, received = _record_after(model, tokens, name, hook_fn, "the model run with your hook")
    _, clean = _clean(model, tokens, [name])
    truth = clean[name].clone()
    truth[:, positions] = value
    compare_tensors(
        received,
        truth,
        what=f"activation after your hook at {name}",
        atol=1e-6,
        dims="batch pos d_model",
        hint=hint,
    )


def _clean(model, tokens, names):
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=list(names))
    return logits, {n: cache[n].detach().clone() for n in names}


# ---- 02.1-02.4: Python closures ------------------------------------------------------------------


def check_multiplier_and_adder(fn, hidden: bool = False):
    """fn(fixed_value) -> function (a, b) -> (a * b) + fixed_value (the tutorial's closure)."""
    cases = (
        [(7, 2, -3), (0.5, 4, 1), (-1, -2, -3)] if hidden else [(10, 2, 3), (3, 1, 5), (-2, 5, 4)]
    )
    rng = hidden_rng("02.1", hidden)
    if rng is not None:  # three different fixed values, so a shared global shows
        nonzero = [i for i in range(-9, 10) if i]
        cases = [
            (fixed_value, rng.choice(nonzero), rng.choice(nonzero))
            for fixed_value in rng.sample(nonzero, 3)
        ]

    def body():
        made = []
        for fixed_value, _a, _b in cases:
            g = call(fn, fixed_value, name="multiplier_and_adder")
            _expect_callable(g, f"multiplier_and_adder({fixed_value})")
            made.append((g, fixed_value))
        for (g, fixed_value), (_, a, b) in zip(made, cases, strict=False):
            got = call(g, a, b, name=f"multiplier_and_adder({fixed_value})")
            want = (a * b) + fixed_value
            if got == a * fixed_value + b and got != want:
                raise Fail(
                    f"multiplier_and_adder({fixed_value})({a}, {b}) returned {got!r} = a * "
                    "fixed_value + b; "
                    f"expected {want!r} = (a * b) + fixed_value. Hint: multiply the two arguments, "
                    "then add "
                    "the remembered fixed_value (the tutorial: multiplier_and_adder(10)(2, 3) == "
                    "16)"
                )
            expect(
                got == want,
                f"multiplier_and_adder({fixed_value})({a}, {b}) returned {got!r}, expected "
                f"{want!r} "
                "((a * b) + fixed_value). If it used another case's fixed_value, do not store it "
                "in a global: "
                "the inner function should read the outer function's argument",
            )
        return f"{len(cases)} functions built, each remembers its own fixed_value"

    run_check("02.1 multiplier_and_adder", body, hidden=hidden)


def check_multiplier_and_adder_lambda(fn, hidden: bool = False):
    """fn(fixed_value) -> a lambda (a, b) -> (a * b) + fixed_value."""
    cases = [(6, 3, 1), (-4, 2, 2)] if hidden else [(10, 2, 3), (2, 7, -1)]
    rng = hidden_rng("02.2", hidden)
    if rng is not None:
        cases = [
            tuple(rng.choice([i for i in range(-9, 10) if i]) for _ in range(3)) for _ in cases
        ]

    def body():
        for fixed_value, a, b in cases:
            g = call(fn, fixed_value, name="multiplier_and_adder_lambda")
            _expect_callable(g, f"multiplier_and_adder_lambda({fixed_value})")
            expect(
                getattr(g, "__name__", "") == "<lambda>",
                "multiplier_and_adder_lambda should return a lambda, got a function named "
                f"{g.__name__!r}. "
                "Hint: `return lambda a, b: ...`",
            )
            got = call(g, a, b, name=f"multiplier_and_adder_lambda({fixed_value})")
            want = (a * b) + fixed_value
            expect(
                got == want,
                f"multiplier_and_adder_lambda({fixed_value})({a}, {b}) returned {got!r}, "
                f"expected {want!r} ((a * b) + fixed_value)",
            )
        return "the lambda computes (a * b) + fixed_value"

    run_check("02.2 multiplier_and_adder_lambda", body, hidden=hidden)


def check_sum_multiplied_and_added(fn, hidden: bool = False):
    """fn(func, list_of_tuples) -> sum of func(a, b) over the tuples."""
    pairs = (
        [(1, 2), (3, 4), (-5, 6), (0, 0)] if hidden else [(2, 3), (4, 5), (6, 7)]
    )  # the tutorial's list
    rng = hidden_rng("02.3", hidden)
    if rng is not None:
        pairs = [(rng.randint(-20, 20), rng.randint(-20, 20)) for _ in range(rng.randint(3, 6))]

    def body():
        calls = []

        def spy(a, b):  # not commutative, so swapped arguments show
            calls.append((a, b))
            return 100 * a - b

        got = call(fn, spy, pairs, name="sum_multiplied_and_added")
        expect(
            calls == pairs,
            f"sum_multiplied_and_added should call func once per tuple, in order; it called it "
            f"with {calls}, expected {pairs}. Hint: `func(a, b)` for each `(a, b)`",
        )
        want = sum(100 * a - b for a, b in pairs)
        expect(
            got == want,
            f"sum_multiplied_and_added returned {got!r}, expected {want} (the sum of func(a, b))",
        )
        empty = call(fn, spy, [], name="sum_multiplied_and_added")
        expect(empty == 0, f"for an empty list the sum is 0, got {empty!r}")
        return f"calls func once per tuple and sums the results ({len(pairs)} tuples)"

    run_check("02.3 sum_multiplied_and_added", body, hidden=hidden)


def check_position_scaler(fn, hidden: bool = False):
    """fn(positions, factor) -> function x [batch pos d_model] -> copy of x with x[:, positions] *
    factor."""
    positions, factor, seed = ([0, 5], -1.0, 0) if hidden else ([1, 3], 2.0, 0)
    rng = hidden_rng("02.4", hidden)
    if rng is not None:  # position 2 stays out: the check appends it to the caller's list
        positions, factor, seed = (
            sorted(rng.sample([0, 1, 3, 4, 5], 2)),
            rng.choice([-3.0, -1.0, 0.5, 3.0]),
            rng.randrange(10_000),
        )

    def body():
        torch.manual_seed(seed)
        x = torch.randn(5, 6, 4)
        caller_list = list(positions)
        scale = call(fn, caller_list, factor, name="make_position_scaler")
        _expect_callable(scale, "make_position_scaler(positions, factor)")
        caller_list.append(2)  # the caller reuses their list; the closure must not follow
        given = x.clone()
        out = call(scale, given, name="the returned function")
        expected = x.clone()  # the truth exists only after the learner's code ran
        expected[:, positions] *= factor
        expect(out is not None, "the returned function returned None. Hint: return the scaled copy")
        expect(
            torch.equal(given, x),
            "the returned function changed its input in place. Hint: `y = x.clone()`, "
            "scale `y`, return `y`",
        )
        if (
            isinstance(out, torch.Tensor)
            and out.shape == x.shape
            and torch.allclose(out[:, 2], x[:, 2] * factor)
        ):
            raise Fail(
                "position 2 was scaled too: it was appended to the caller's list *after* the "
                "function was "
                "made. A closure sees the list object, not a snapshot. Hint: store a copy, "
                "`positions = list(positions)`, before defining the inner function"
            )
        _diagnose_axis(out, expected, x, positions, "the returned function")
        compare_tensors(
            out,
            expected,
            what="scaled tensor",
            atol=1e-6,
            dims="batch pos d_model",
            hint="multiply x[:, positions] by factor, leave the rest unchanged",
        )
        return (
            f"scales positions {positions} of every batch item and keeps its own copy "
            f"({within(1e-6)})"
        )

    run_check("02.4 make_position_scaler", body, hidden=hidden)


# ---- 02.5: run_with_cache with a names filter ----------------------------------------------------


class _SpyModel:
    """Forwards everything to the model and remembers the names_filter given to run_with_cache."""

    def __init__(self, model):
        self._model = model
        self.filters = []

    def __getattr__(self, attr):
        return getattr(self._model, attr)

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)

    def run_with_cache(self, *args, **kwargs):
        self.filters.append(kwargs.get("names_filter"))
        return self._model.run_with_cache(*args, **kwargs)

    # grading: the learner's calls of these methods are recorded in their kernel, and the grader
    # makes the same bookkeeping on its own spy (the stacked tensor itself is checked against its
    # own truth)
    _rsl_record_methods = ("run_with_cache",)

    def _rsl_replay(self, method, *args, **kwargs):
        if method == "run_with_cache":
            self.filters.append(kwargs.get("names_filter"))


def check_resid_post_stack(fn, model, hidden: bool = False):
    """fn(model, prompt) -> Float[Tensor, "layer pos d_model"]: blocks.{l}.hook_resid_post,
    stacked."""
    prompt = HIDDEN_PROMPT if hidden else PROMPT
    rng = hidden_rng("02.5", hidden)
    prompt = random_prompt(rng) if rng is not None else prompt

    def body():
        spy = _SpyModel(model)
        got = call(fn, spy, prompt, name="resid_post_stack")
        names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
        recorded = {}

        def recorder(activation, hook):
            recorded[len(recorded)] = activation[0].detach().clone()

        with torch.no_grad():
            model.run_with_hooks(model.to_tokens(prompt), fwd_hooks=[(n, recorder) for n in names])
        expected = torch.stack([recorded[i] for i in range(len(names))])
        compare_tensors(
            got,
            expected,
            what="stacked residual stream",
            atol=1e-4,
            dims="layer pos d_model",
            hint="stack cache[f'blocks.{l}.hook_resid_post'][0] for l = 0..n_layers-1, in order",
        )
        expect(spy.filters, "resid_post_stack should call model.run_with_cache (with names_filter)")
        expect(
            all(f is not None for f in spy.filters),
            "run_with_cache was called without names_filter, so it stored every hook point (about "
            "1400 tensors). "
            "Hint: names_filter=lambda name: name.endswith('hook_resid_post')",
        )
        return (
            f"matches the residual stream recorded by hooks at all {len(names)} layers "
            f"({within(1e-4)})"
        )

    run_check("02.5 resid_post_stack", body, hidden=hidden)


# ---- 02.6-02.8: hook factories -------------------------------------------------------------------


def check_zero_ablation(fn, model, hidden: bool = False):
    """fn(positions) -> hook zeroing activation[:, positions]."""
    positions, layer, prompt = _ablation_site("02.6", hidden, ([1, 5], 7))

    def body():
        torch.manual_seed(1)
        x = torch.randn(6, 8, 5)
        hook_fn = call(fn, positions, name="make_zero_ablation")
        _expect_callable(hook_fn, "make_zero_ablation(positions)")
        out = _run_hook_on_tensor(hook_fn, x, "your zero-ablation hook")
        expected = x.clone()  # the truth exists only after the learner's code ran
        expected[:, positions] = 0
        _diagnose_axis(out, expected, x, positions, "your zero-ablation hook")
        compare_tensors(
            out,
            expected,
            what="zero-ablated activation",
            atol=0,
            dims="batch pos d_model",
            hint="`new[:, positions] = 0` on a clone",
        )
        last = call(fn, -1, name="make_zero_ablation")
        out_last = _run_hook_on_tensor(last, x, "make_zero_ablation(-1)")
        expect(
            isinstance(out_last, torch.Tensor)
            and torch.equal(out_last[:, -1], torch.zeros_like(x[:, -1]))
            and torch.equal(out_last[:, :-1], x[:, :-1]),
            "make_zero_ablation(-1) should zero the last position only (a single int is allowed)",
        )

        name = f"blocks.{layer}.hook_resid_pre"
        _expect_written(model, model.to_tokens(prompt), name, hook_fn, positions, 0.0)
        return f"zeroes positions {positions} at {name} and leaves the rest ({within(1e-6)})"

    run_check("02.6 make_zero_ablation", body, hidden=hidden)


def check_mean_ablation(fn, model, hidden: bool = False):
    """fn(mean, positions) -> hook replacing activation[:, positions] with mean (broadcast over
    batch)."""
    positions, layer, prompt = _ablation_site("02.7", hidden, ([3, 6], 9))

    def body():
        torch.manual_seed(2)
        x, mean = torch.randn(6, 8, 5), torch.randn(5)
        mean_before = mean.clone()
        hook_fn = call(fn, mean, positions, name="make_mean_ablation")
        _expect_callable(hook_fn, "make_mean_ablation(mean, positions)")
        out = _run_hook_on_tensor(hook_fn, x, "your mean-ablation hook")
        expected = x.clone()  # the truth exists only after the learner's code ran
        expected[:, positions] = mean
        expect(
            torch.equal(mean, mean_before),
            "your hook changed `mean` in place; it should only read it",
        )
        _diagnose_axis(out, expected, x, positions, "your mean-ablation hook")
        compare_tensors(
            out,
            expected,
            what="mean-ablated activation",
            atol=1e-6,
            dims="batch pos d_model",
            hint="`new[:, positions] = mean` on a clone; a [d_model] mean broadcasts over batch "
            "and positions",
        )
        per_position = torch.randn(len(positions), 5)
        out = _run_hook_on_tensor(
            call(fn, per_position, positions, name="make_mean_ablation"),
            x,
            "your mean-ablation hook (one mean per position)",
        )
        expected = x.clone()
        expected[:, positions] = per_position
        compare_tensors(
            out,
            expected,
            what="mean-ablated activation with a [n_positions, d_model] mean",
            atol=1e-6,
            dims="batch pos d_model",
            hint="assign mean to activation[:, positions] and let it broadcast",
        )

        name = f"blocks.{layer}.hook_resid_pre"
        tokens = model.to_tokens(prompt)
        _, clean = _clean(model, tokens, [name])
        model_mean = clean[name][0, 1:].mean(dim=0)
        hook_fn = call(fn, model_mean, positions, name="make_mean_ablation")
        _expect_written(model, tokens, name, hook_fn, positions, model_mean)
        return f"replaces positions {positions} at {name} with the mean ({within(1e-6)})"

    run_check("02.7 make_mean_ablation", body, hidden=hidden)


def check_patch_from(fn, model, hidden: bool = False):
    """fn(cache, name, positions) -> hook copying cache[name][:, positions] into the activation."""
    positions, layer = ([2, 3], 6) if hidden else ([2, 3, 4], 3)
    prompt, source_prompt = (
        (HIDDEN_PROMPT, HIDDEN_SOURCE_PROMPT) if hidden else (PROMPT, SOURCE_PROMPT)
    )
    rng = hidden_rng("02.8", hidden)
    if rng is not None:
        positions, layer = _drawn_site(rng)
        for _ in range(50):  # two drawn prompts of the same token length (patchable)
            first, second = random_prompt(rng), random_prompt(rng)
            if first != second and model.to_tokens(first).shape == model.to_tokens(second).shape:
                prompt, source_prompt = first, second
                break

    def body():
        name = f"blocks.{layer}.hook_resid_pre"
        tokens, source_tokens = model.to_tokens(prompt), model.to_tokens(source_prompt)
        expect(
            tokens.shape == source_tokens.shape,
            "internal: the two prompts should have the same length",
        )
        _, clean = _clean(model, tokens, [name])
        source_logits, cache = _clean(model, source_tokens, [name])
        cache_before = {k: v.clone() for k, v in cache.items()}

        hook_fn = call(fn, cache, name, positions, name="make_patch_from")
        _expect_callable(hook_fn, "make_patch_from(cache, name, positions)")
        _, received = _record_after(model, tokens, name, hook_fn, "the model run with your hook")
        expect(
            torch.equal(cache[name], cache_before[name]),
            "after your hook ran, cache[name] had changed: the hook wrote into the cached tensor. "
            "Hint: clone the "
            "activation and copy the cached values into the clone (`new[:, positions] = "
            "cache[name][:, positions]`)",
        )
        expect(
            received is not None and not torch.equal(received, clean[name]),
            "the model received the clean activation: did the hook return the patched tensor?",
        )
        _expect_written(
            model,
            tokens,
            name,
            hook_fn,
            positions,
            cache[name][:, positions],
            received,
            hint="copy cache[name][:, positions] into activation[:, positions]; keep the other "
            "positions",
        )

        every = list(range(tokens.shape[1]))
        logits, _ = _record_after(
            model,
            tokens,
            name,
            call(fn, cache, name, every, name="make_patch_from"),
            "the model run with your hook",
        )
        compare_tensors(
            logits,
            source_logits,
            what="logits after patching every position",
            atol=1e-3,
            dims="batch pos d_vocab",
            hint="patching all positions of the residual stream must reproduce the source run",
        )
        batch2 = tokens.repeat(2, 1)
        _, clean2 = _clean(
            model, batch2, [name]
        )  # batch 2 from its own run: float sums depend on batch size
        truth2 = clean2[name].clone()
        truth2[:, positions] = cache[name][:, positions]
        _, received2 = _record_after(
            model, batch2, name, hook_fn, "the model run on a batch of 2 with your hook"
        )
        compare_tensors(
            received2,
            truth2,
            what="activation for a batch of 2 (cache has batch 1)",
            atol=1e-6,
            dims="batch pos d_model",
            hint="index cache[name][:, positions] and let it broadcast over the batch",
        )
        return (
            f"patches positions {positions} at {name}; patching every position reproduces the "
            "source run "
            f"(logits {within(1e-3)}); the cache is untouched"
        )

    run_check("02.8 make_patch_from", body, hidden=hidden)


# ---- 02.9: hooks removed even after an exception -------------------------------------------------


def _attached(model) -> int:
    from course_utils.hooks import attached_hook_count

    return attached_hook_count(model, including_permanent=False)


class _HookSpy:
    """Forwards everything to the model; for grading, describes the hooks attached to it.

    ``_rsl_state()`` lists the temporary (not permanent) hooks attached to the model as plain data,
    ``[hook point name, "fwd" or "bwd", i]`` with ``i`` the index of the hook function among the
    ones the check gave (-1 for any other function). The grading kernel records that state after
    the learner's function returns and after its context manager is entered and left; the grader's
    spy puts its own model in the same state (``_rsl_set_state``), so its own check observes the
    hooks and decides.
    """

    _rsl_max_hooks = 64

    def __init__(self, model, hook_fns):
        self._model = model
        self._hook_fns = list(hook_fns)

    def __getattr__(self, attr):
        return getattr(self._model, attr)

    def __call__(self, *args, **kwargs):
        return self._model(*args, **kwargs)

    def _rsl_state(self) -> list:
        state, seen = [], set()
        for name, point in self._model.hook_dict.items():
            if id(point) in seen:
                continue
            seen.add(id(point))
            for direction, handles in (("fwd", point.fwd_hooks), ("bwd", point.bwd_hooks)):
                for handle in handles:
                    if not handle.is_permanent:
                        hook = handle.user_hook
                        index = next((i for i, f in enumerate(self._hook_fns) if f is hook), -1)
                        state.append([name, direction, index])
        return state

    def _rsl_set_state(self, state) -> None:
        if type(state) is not list or len(state) > self._rsl_max_hooks:
            raise ValueError("the recorded hooks are not a list of at most 64 hooks")
        hooks = []
        for item in state:
            if (
                type(item) is not list
                or len(item) != 3
                or item[0] not in self._model.hook_dict
                or item[1] not in ("fwd", "bwd")
                or type(item[2]) is not int
            ):
                raise ValueError(f"a recorded hook is not [hook point, direction, index]: {item!r}")
            name, direction, index = item
            fn = self._hook_fns[index] if 0 <= index < len(self._hook_fns) else _foreign_hook
            hooks.append((name, fn, direction))
        self._model.reset_hooks(including_permanent=False)
        for name, fn, direction in hooks:
            self._model.add_hook(name, fn, dir=direction)


def _foreign_hook(activation, hook):
    raise Fail(
        f"`temporary_hooks` attached a function at {hook.name} other than the hook functions it "
        "was given; the grader can replay only those. Hint: model.add_hook(name, hook_fn) with "
        "each pair of fwd_hooks, unchanged"
    )


def check_temporary_hooks(fn, model, hidden: bool = False):
    """fn(model, fwd_hooks) -> context manager attaching the hooks for the with-block, removing them
    on exit."""
    name = "blocks.2.hook_resid_post" if hidden else "hook_embed"
    rng = hidden_rng("02.9", hidden)
    if rng is not None:
        name = (
            f"blocks.{rng.randrange(model.cfg.n_layers)}."
            f"{rng.choice(['hook_resid_pre', 'hook_resid_post'])}"
        )

    class Boom(Exception):
        pass

    def body():
        model.reset_hooks()
        tokens = model.to_tokens(PROMPT)
        calls = []

        def counting_hook(activation, hook):
            calls.append(1)

        # the learner's function gets a spy of the model: what it attaches lands on the model,
        # and the grader can record where (see _HookSpy)
        spy = _HookSpy(model, [counting_hook])
        manager = call(fn, spy, [(name, counting_hook)], name="temporary_hooks")
        expect(
            isinstance(manager, AbstractContextManager) or hasattr(manager, "__enter__"),
            f"temporary_hooks should return a context manager, got {type(manager).__name__}. Hint: "
            "decorate the "
            "function with @contextmanager and `yield` once",
        )
        try:
            with manager:
                inside = _attached(model)
                with torch.no_grad():
                    model(tokens)
        except NotImplementedError:
            raise Fail(
                "`temporary_hooks` is not implemented yet: replace `raise NotImplementedError()` "
                "with your code"
            ) from None
        except Fail:
            raise
        except Exception as error:
            raise Fail(f"`temporary_hooks` raised {type(error).__name__}: {error}") from None
        expect(
            inside >= 1 and len(calls) == 1,
            "inside the with-block the hook should be attached and run once per forward pass; it "
            f"ran {len(calls)} "
            "times. Hint: model.add_hook(name, hook_fn) for each pair before `yield`",
        )
        expect(
            _attached(model) == 0,
            f"{_attached(model)} hook(s) still attached after the with-block ended. "
            "Hint: remove them after `yield` (model.reset_hooks())",
        )

        raised = False
        try:
            with call(fn, spy, [(name, counting_hook)], name="temporary_hooks"):
                raise Boom("an error inside the with-block")
        except Boom:
            raised = True
        left = _attached(model)
        expect(
            left == 0,
            f"{left} hook(s) were left attached after an exception inside the with-block: every "
            "later "
            "forward pass would still run them. Hint: put `yield` in `try:` and the removal in "
            "`finally:`",
        )
        expect(
            raised,
            "the exception raised inside the with-block disappeared: your context manager "
            "swallowed it. "
            "Hint: use try/finally, not try/except",
        )
        before = len(calls)
        with torch.no_grad():
            model(tokens)
        expect(len(calls) == before, "the hook still ran after the with-block")
        return "hooks run inside the with-block and are gone afterwards, even after an exception"

    try:
        run_check("02.9 temporary_hooks", body, hidden=hidden)
    finally:
        # whatever the learner's code did, leave the model clean for the next cells
        model.reset_hooks()
