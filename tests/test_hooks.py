"""Tests of course_utils.hooks (lesson 02) and of the lesson's checks.

Every check must pass on a correct solution and raise CheckFailed on each typical wrong one.
"""

from contextlib import contextmanager

import pytest
import torch
from conftest import answer_prob, stub

from course_utils import hooks
from course_utils.checks import CheckFailed, grading_seed
from course_utils.checks import hooks as checks
from course_utils.predictions import answer_token_id

PROMPT = "The Eiffel Tower is located in the city of"
SOURCE = "The Colosseum is located in the city of"


@pytest.fixture()
def x():
    torch.manual_seed(0)
    return torch.randn(3, 7, 5)


# ---- course_utils.hooks on plain tensors ---------------------------------------------------------


def test_zero_ablation_zeroes_only_the_positions_and_leaves_its_input(x):
    before = x.clone()
    out = hooks.make_zero_ablation([1, -1])(x, None)
    assert torch.equal(x, before)
    assert torch.all(out[:, [1, 6]] == 0)
    assert torch.equal(out[:, [0, 2, 3, 4, 5]], x[:, [0, 2, 3, 4, 5]])
    assert torch.equal(hooks.make_zero_ablation(2)(x, None)[:, 2], torch.zeros(3, 5))
    assert torch.all(hooks.make_zero_ablation(slice(0, 3))(x, None)[:, :3] == 0)


def test_factories_copy_the_positions_list(x):
    positions = [1]
    hook_fn = hooks.make_zero_ablation(positions)
    positions.append(2)
    out = hook_fn(x, None)
    assert torch.equal(out[:, 2], x[:, 2])


def test_mean_ablation_broadcasts_and_keeps_its_own_mean(x):
    mean = torch.randn(5)
    hook_fn = hooks.make_mean_ablation(mean, [0, 3])
    mean_copy = mean.clone()
    mean += 100  # the caller changing their tensor must not reach the hook
    out = hook_fn(x, None)
    assert torch.equal(out[:, 0], mean_copy.expand(3, 5)) and torch.equal(
        out[:, 3], mean_copy.expand(3, 5)
    )
    per_position = torch.randn(2, 5)
    out = hooks.make_mean_ablation(per_position, [0, 3])(x, None)
    assert torch.equal(out[1, [0, 3]], per_position)
    with pytest.raises(ValueError, match="mean has shape"):
        hooks.make_mean_ablation(torch.randn(7, 5), [0, 3])(x, None)


def test_patch_from_reads_the_cache_without_writing(x):
    source = torch.randn(1, 7, 5)
    cache = {"blocks.0.hook_resid_pre": source}
    before = source.clone()
    out = hooks.make_patch_from(cache, "blocks.0.hook_resid_pre", [2, 4])(x, None)
    assert torch.equal(source, before)
    assert torch.equal(out[:, 2], source[:, 2].expand(3, 5)) and torch.equal(out[:, 0], x[:, 0])
    with pytest.raises(KeyError, match="not in the cache"):
        hooks.make_patch_from(cache, "blocks.1.hook_resid_pre", [2])
    with pytest.raises(ValueError, match="same number of tokens"):
        hooks.make_patch_from(cache, "blocks.0.hook_resid_pre", [2])(torch.randn(3, 6, 5), None)
    with pytest.raises(ValueError, match="batch size"):
        hooks.make_patch_from({"a": torch.randn(2, 7, 5)}, "a", [2])(x, None)


def test_noise_hook_is_seeded_and_has_the_right_scale():
    act = torch.zeros(4, 50, 64)
    a = hooks.make_noise_hook([1, 2], 0.5, seed=3)(act, None)
    b = hooks.make_noise_hook([1, 2], 0.5, seed=3)(act, None)
    c = hooks.make_noise_hook([1, 2], 0.5, seed=4)(act, None)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.all(a[:, 0] == 0) and torch.all(a[:, 3:] == 0) and torch.all(act == 0)
    assert 0.45 < float(a[:, 1:3].std()) < 0.55
    assert not torch.equal(a[0, 1], a[1, 1])  # each batch item gets its own noise
    generator = torch.Generator().manual_seed(0)
    hook_fn = hooks.make_noise_hook([1], 1.0, generator=generator)
    assert not torch.equal(
        hook_fn(act, None), hook_fn(act, None)
    )  # a generator advances between runs


@pytest.mark.parametrize(
    "positions, error",
    [
        ([], ValueError),
        ("2", TypeError),
        ([1.0], TypeError),
        (True, TypeError),
        (torch.tensor([0.5]), TypeError),
    ],
)
def test_bad_positions_are_refused(positions, error):
    with pytest.raises(error):
        hooks.make_zero_ablation(positions)


def test_activation_problems_are_explained(x):
    with pytest.raises(IndexError, match="pos runs from 0 to 6"):
        hooks.make_zero_ablation([7])(x, None)
    pattern_hook = type("H", (), {"name": "blocks.0.attn.hook_pattern"})()
    with pytest.raises(ValueError, match="query_pos"):
        hooks.make_zero_ablation([1])(torch.randn(1, 9, 7, 7), pattern_hook)
    with pytest.raises(ValueError, match="batch dimension"):
        hooks.make_zero_ablation([1])(torch.randn(5), None)
    with pytest.raises(ValueError):
        hooks.make_noise_hook([1], -1.0)
    with pytest.raises(ValueError):
        hooks.make_noise_hook([1], 1.0, seed=None)


# ---- course_utils.hooks on the model -------------------------------------------------------------


def test_hook_names_and_clean_probability(model):
    names = hooks.hook_names(model)
    assert "blocks.0.hook_resid_pre" in names and "hook_embed" in names
    resid_pre = hooks.hook_names(model, lambda n: n.endswith("hook_resid_pre"))
    assert len(resid_pre) == model.cfg.n_layers
    assert hooks.hook_names(model, "blocks.3.hook_resid_") == [
        "blocks.3.hook_resid_mid",
        "blocks.3.hook_resid_post",
        "blocks.3.hook_resid_pre",
    ]
    tokens = model.to_tokens(PROMPT)
    p = float(hooks.answer_probs_with_hooks(model, tokens, answer_token_id(model, " Paris")))
    assert abs(p - answer_prob(model, PROMPT, " Paris")) < 1e-5


def test_patching_every_position_reproduces_the_source_run(model):
    tokens, source = model.to_tokens(PROMPT), model.to_tokens(SOURCE)
    name = "blocks.4.hook_resid_pre"
    with torch.no_grad():
        source_logits, cache = model.run_with_cache(source, names_filter=[name])
        patched = model.run_with_hooks(
            tokens, fwd_hooks=[(name, hooks.make_patch_from(cache, name, slice(None)))]
        )
    torch.testing.assert_close(patched, source_logits, atol=1e-4, rtol=0)


def test_temporary_hooks_come_off_after_an_exception(model, lesson02):
    tokens = model.to_tokens(PROMPT)
    calls = []
    assert hooks.attached_hook_count(model) == 0
    with pytest.raises(RuntimeError):
        with lesson02["temporary_hooks"](
            model, [("hook_embed", lambda activation, hook: calls.append(1))]
        ):
            assert hooks.attached_hook_count(model) == 1
            with torch.no_grad():
                model(tokens)
            raise RuntimeError("boom")
    assert hooks.attached_hook_count(model) == 0 and calls == [1]


def test_attached_hook_count_sees_permanent_hooks(model):
    try:
        model.add_perma_hook("hook_embed", lambda activation, hook: None)
        model.reset_hooks()
        assert hooks.attached_hook_count(model) == 1
        assert hooks.attached_hook_count(model, including_permanent=False) == 0
    finally:
        model.reset_hooks(including_permanent=True)
    assert hooks.attached_hook_count(model) == 0


# ---- the checks: pass on solutions, fail on wrong code -------------------------------------------


@pytest.fixture(scope="module")
def lesson02(solution_functions):
    """The functions lesson 02's learner writes, from the solution notebook (their one source)."""
    from transformer_lens.utilities import get_act_name

    return solution_functions(
        "02_hooks", {"torch": torch, "contextmanager": contextmanager, "get_act_name": get_act_name}
    )


_shared = {}


def shared_state_multiplier_and_adder(fixed_value):
    _shared["v"] = fixed_value  # every function reads the latest fixed_value
    return lambda a, b: (a * b) + _shared["v"]


def old_course_multiplier_and_adder(fixed_value):
    def inner(a, b):
        return a * fixed_value + b  # not the tutorial's (a * b) + fixed_value

    return inner


def test_closures_follow_the_tutorial(lesson02):
    """The tutorial's values: multiplier_and_adder(10)(2, 3) == 16, and 98 over its list of
    tuples."""
    made = lesson02["multiplier_and_adder"](10)
    assert made(2, 3) == 16 and lesson02["multiplier_and_adder_lambda"](10)(2, 3) == 16
    assert (
        lesson02["sum_multiplied_and_added"](made, [(2, 3), (4, 5), (6, 7)]) == 16 + 30 + 52 == 98
    )


def test_multiplier_and_adder_hidden_inputs_are_drawn_at_grading(lesson02):
    """A table of the answers for the cases written in the check (visible and hidden) is enough in
    a notebook and fails while grading; the honest closure passes under every seed."""
    written = [(10, 2, 3), (3, 1, 5), (-2, 5, 4), (7, 2, -3), (0.5, 4, 1), (-1, -2, -3)]
    table = {(v, a, b): (a * b) + v for v, a, b in written}

    def lookup(fixed_value):
        return lambda a, b: table.get((fixed_value, a, b), 0)

    checks.check_multiplier_and_adder(lookup, hidden=True)
    for seed in (1, 2, 3):
        with grading_seed(seed):
            checks.check_multiplier_and_adder(lesson02["multiplier_and_adder"], hidden=True)
            with pytest.raises(CheckFailed):
                checks.check_multiplier_and_adder(lookup, hidden=True)


def test_closure_checks_pass_and_fail(lesson02):
    good, good_lambda = lesson02["multiplier_and_adder"], lesson02["multiplier_and_adder_lambda"]
    checks.check_multiplier_and_adder(good)
    checks.check_multiplier_and_adder(good, hidden=True)
    checks.check_multiplier_and_adder_lambda(good_lambda)
    checks.check_multiplier_and_adder_lambda(good_lambda, hidden=True)
    checks.check_sum_multiplied_and_added(lesson02["sum_multiplied_and_added"])
    for wrong in (
        stub,
        lambda v: None,
        lambda v: 10 * v,
        shared_state_multiplier_and_adder,
        lambda v: lambda a, b: (a * b) - v,
        lambda v: lambda a, b: a + b + v,
    ):
        with pytest.raises(CheckFailed):
            checks.check_multiplier_and_adder(wrong)
    with pytest.raises(CheckFailed, match="a \\* fixed_value \\+ b"):  # the targeted hint
        checks.check_multiplier_and_adder(old_course_multiplier_and_adder)
    for wrong in (
        stub,
        good,
        lambda v: lambda a, b: a * v + b,
    ):  # a def-function is not a lambda
        with pytest.raises(CheckFailed):
            checks.check_multiplier_and_adder_lambda(wrong)
    for wrong in (
        stub,
        lambda f, pairs: sum(a * 10 + b for a, b in pairs),
        lambda f, pairs: f(*pairs[0]),
        lambda f, pairs: sum(f(b, a) for a, b in pairs),
    ):
        with pytest.raises(CheckFailed):
            checks.check_sum_multiplied_and_added(wrong)


def good_scaler(positions, factor):
    positions = list(positions)

    def scale(x):
        y = x.clone()
        y[:, positions] *= factor
        return y

    return scale


def test_position_scaler_check_passes_and_fails():
    checks.check_position_scaler(good_scaler)
    checks.check_position_scaler(good_scaler, hidden=True)

    def no_copy(positions, factor):
        def scale(x):
            y = x.clone()
            y[:, positions] *= factor
            return y

        return scale

    def in_place(positions, factor):
        positions = list(positions)

        def scale(x):
            x[:, positions] *= factor
            return x

        return scale

    def batch_axis(positions, factor):
        positions = list(positions)

        def scale(x):
            y = x.clone()
            y[positions] *= factor
            return y

        return scale

    for wrong in (stub, no_copy, in_place, batch_axis, lambda p, f: None):
        with pytest.raises(CheckFailed):
            checks.check_position_scaler(wrong)


def good_resid_post_stack(model, prompt):
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens(prompt), names_filter=names)
    return torch.stack([cache[n][0] for n in names])


def test_resid_post_stack_check_passes_and_fails(model):
    checks.check_resid_post_stack(good_resid_post_stack, model)

    def unfiltered(model, prompt):
        with torch.no_grad():
            _, cache = model.run_with_cache(model.to_tokens(prompt))
        return torch.stack(
            [cache[f"blocks.{layer}.hook_resid_post"][0] for layer in range(model.cfg.n_layers)]
        )

    def resid_pre(model, prompt):
        names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
        with torch.no_grad():
            _, cache = model.run_with_cache(model.to_tokens(prompt), names_filter=names)
        return torch.stack([cache[n][0] for n in names])

    def with_batch(model, prompt):
        return good_resid_post_stack(model, prompt)[:, None]

    for wrong in (stub, unfiltered, resid_pre, with_batch):
        with pytest.raises(CheckFailed):
            checks.check_resid_post_stack(wrong, model)


def _factory(edit, returns=True, clone=True, name="hook"):
    """A zero-ablation factory with one chosen bug."""

    def make(positions):
        positions = [positions] if isinstance(positions, int) else list(positions)

        def hook_fn(activation, hook):
            target = activation.clone() if clone else activation
            edit(target, positions)
            return target if returns else None

        if name != "hook":
            return lambda activation, h: hook_fn(activation, h)
        return hook_fn

    return make


def _zero_pos(t, p):
    t[:, p] = 0


def _zero_batch(t, p):
    t[[i for i in p if i < t.shape[0]]] = 0


def _zero_first_only(t, p):
    t[:, p[:1]] = 0


def test_zero_ablation_check_passes_and_fails(model):
    checks.check_zero_ablation(hooks.make_zero_ablation, model)
    checks.check_zero_ablation(_factory(_zero_pos), model, hidden=True)
    wrongs = [
        stub,
        lambda positions: None,
        _factory(_zero_pos, returns=False),
        _factory(_zero_pos, clone=False),
        _factory(_zero_pos, clone=False, returns=False),
        _factory(_zero_batch),
        _factory(_zero_first_only),
        _factory(_zero_pos, name="h"),
    ]
    for wrong in wrongs:
        with pytest.raises(CheckFailed):
            checks.check_zero_ablation(wrong, model)


def test_mean_ablation_check_passes_and_fails(model):
    checks.check_mean_ablation(hooks.make_mean_ablation, model)

    def zeros_instead(mean, positions):
        return hooks.make_zero_ablation(positions)

    def edits_mean(mean, positions):
        positions = list(positions)

        def hook_fn(activation, hook):
            new = activation.clone()
            new[:, positions] = mean
            mean.zero_()  # clobbers the caller's tensor
            return new

        return hook_fn

    def in_place(mean, positions):
        def hook_fn(activation, hook):
            activation[:, positions] = mean
            return activation

        return hook_fn

    for wrong in (stub, zeros_instead, edits_mean, in_place):
        with pytest.raises(CheckFailed):
            checks.check_mean_ablation(wrong, model)


def test_patch_check_passes_and_fails(model):
    checks.check_patch_from(hooks.make_patch_from, model)

    def writes_into_cache(cache, name, positions):
        def hook_fn(activation, hook):
            patched = cache[name]
            others = [p for p in range(activation.shape[1]) if p not in positions]
            patched[:, others] = activation[:, others]
            return patched

        return hook_fn

    def all_positions(cache, name, positions):
        return lambda activation, hook: cache[name].clone()

    def forgets_return(cache, name, positions):
        def hook_fn(activation, hook):
            new = activation.clone()
            new[:, positions] = cache[name][:, positions]

        return hook_fn

    for wrong in (stub, writes_into_cache, all_positions, forgets_return):
        with pytest.raises(CheckFailed):
            checks.check_patch_from(wrong, model)
    assert hooks.attached_hook_count(model) == 0


def test_temporary_hooks_check_passes_and_fails(model, lesson02):
    checks.check_temporary_hooks(lesson02["temporary_hooks"], model)

    @contextmanager
    def no_finally(model, fwd_hooks):
        for name, fn in fwd_hooks:
            model.add_hook(name, fn)
        yield model
        model.reset_hooks()

    @contextmanager
    def swallows(model, fwd_hooks):
        for name, fn in fwd_hooks:
            model.add_hook(name, fn)
        try:
            yield model
        except Exception:
            pass
        model.reset_hooks()

    @contextmanager
    def never_attaches(model, fwd_hooks):
        yield model

    @contextmanager
    def stub_manager(model, fwd_hooks):
        raise NotImplementedError()
        yield model

    def not_a_context_manager(model, fwd_hooks):
        for name, fn in fwd_hooks:
            model.add_hook(name, fn)
        return model

    for wrong in (stub_manager, no_finally, swallows, never_attaches, not_a_context_manager):
        with pytest.raises(CheckFailed):
            checks.check_temporary_hooks(wrong, model)
        assert hooks.attached_hook_count(model) == 0  # the check cleans up after a failure


STUB_CHECKS = {
    "ex02_multiplier_and_adder": (
        "multiplier_and_adder",
        lambda fn, model: checks.check_multiplier_and_adder(fn),
    ),
    "ex02_multiplier_and_adder_lambda": (
        "multiplier_and_adder_lambda",
        lambda fn, model: checks.check_multiplier_and_adder_lambda(fn),
    ),
    "ex02_sum_multiplied_and_added": (
        "sum_multiplied_and_added",
        lambda fn, model: checks.check_sum_multiplied_and_added(fn),
    ),
    "ex02_make_position_scaler": (
        "make_position_scaler",
        lambda fn, model: checks.check_position_scaler(fn),
    ),
    "ex02_resid_post_stack": ("resid_post_stack", checks.check_resid_post_stack),
    "ex02_make_zero_ablation": ("make_zero_ablation", checks.check_zero_ablation),
    "ex02_make_mean_ablation": ("make_mean_ablation", checks.check_mean_ablation),
    "ex02_make_patch_from": ("make_patch_from", checks.check_patch_from),
    "ex02_temporary_hooks": ("temporary_hooks", checks.check_temporary_hooks),
}


def test_every_check_fails_on_the_generated_student_stub(model):
    """Run each exercise cell of the generated student notebook, then its check: all must fail."""
    import nbformat
    from transformer_lens.utilities import get_act_name

    from course_utils.exercises import ROOT, generate_student, nbgrader_meta

    student = generate_student(nbformat.read(ROOT / "solutions" / "02_hooks.ipynb", as_version=4))
    exercises = {
        nbgrader_meta(c)["grade_id"]: c.source
        for c in student.cells
        if c.cell_type == "code" and nbgrader_meta(c).get("solution")
    }
    assert set(exercises) == set(STUB_CHECKS)
    for grade_id, source in exercises.items():
        namespace = {"torch": torch, "contextmanager": contextmanager, "get_act_name": get_act_name}
        exec(source, namespace)
        function_name, check = STUB_CHECKS[grade_id]
        with pytest.raises(CheckFailed):
            check(namespace[function_name], model)
    assert hooks.attached_hook_count(model) == 0
