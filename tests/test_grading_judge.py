"""The grader's replay (course_utils.grading.judge, codec, capture) against honest and hostile
learner code, in one process: the "kernel" half records with the real recorder, the grader half
replays with the real checks. No kernel, no model (the lesson-02 checks used need neither)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time

import pytest

import course_utils.checks as checks
from course_utils.checks import hooks
from course_utils.grading import codec
from course_utils.grading import judge as judge_module
from course_utils.grading.capture import Recorder
from course_utils.grading.judge import Budget, Judge, _ReplayState, read_record, time_limit
from course_utils.grading.lesson import GradeCell


def record_and_judge(
    folder, source: str, learner: dict, kernel_seed=None, grader_seed=None
) -> judge_module.Verdict:
    """Run ``source`` (a check cell) on ``learner``'s names as a kernel would, recording; then judge
    it."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(learner)
    cell = GradeCell("cell", 0, source, 1.0, "ex", names)
    trusted = {"checks": hooks}
    kernel_namespace = dict(trusted, **learner)
    recorder = Recorder(str(folder))
    recorder.begin("cell", names, kernel_namespace)
    previous = checks.set_grading_seed(kernel_seed)
    try:
        exec(source, kernel_namespace)
    except Exception:  # a failing check in the "kernel": its verdict is ignored anyway
        pass
    finally:
        checks.set_grading_seed(previous)
        recorder.end()
    judge = Judge.__new__(Judge)
    judge.snapshots = {"cell": trusted}
    return judge.grade(cell, str(folder), seed=grader_seed)


HIDDEN = "checks.check_{0}({1})\nchecks.check_{0}({1}, hidden=True)"


# ---------------------------------------------------------------- class 1: honest work scores


def test_numpy_scalar_results_are_accepted(tmp_path):
    import numpy as np

    def sum_multiplied_and_added(func, list_of_tuples):
        return np.sum(
            [func(x, y) for x, y in list_of_tuples], dtype=np.int64
        )  # np.int64, 0 when empty

    verdict = record_and_judge(
        tmp_path,
        HIDDEN.format("sum_multiplied_and_added", "sum_multiplied_and_added"),
        {"sum_multiplied_and_added": sum_multiplied_and_added},
        7,
        7,
    )
    assert verdict.passed, verdict.message


def test_a_factory_written_as_a_class_is_recorded(tmp_path):
    import torch

    class make_position_scaler:  # noqa: N801  (the learner's name for it)
        def __init__(self, positions, factor):
            self.positions, self.factor = list(positions), factor

        def __call__(self, x):
            y = x.clone()
            y[:, self.positions] = y[:, self.positions] * self.factor
            return y

    make_position_scaler.__module__ = "__main__"  # as when defined in a notebook cell
    assert isinstance(make_position_scaler([1], 2.0)(torch.ones(1, 3, 2)), torch.Tensor)
    verdict = record_and_judge(
        tmp_path,
        HIDDEN.format("position_scaler", "make_position_scaler"),
        {"make_position_scaler": make_position_scaler},
        3,
        3,
    )
    assert verdict.passed, verdict.message


def test_numpy_values_and_callable_objects_round_trip():
    import numpy as np

    class Adder:
        def __call__(self, x, y):
            return x + y

    Adder.__module__ = "__main__"  # as when defined in a notebook cell
    handles = []
    encoder = codec.Encoder(on_callable=lambda fn: handles.append(fn) or len(handles))
    data = encoder.encode(
        [np.float32(0.5), np.int64(3), np.bool_(True), np.arange(3.0), Adder(), Adder, max]
    )
    decoded = codec.Decoder(bytes(encoder.blob)).decode(json.loads(json.dumps(data)))
    assert decoded[:3] == [0.5, 3, True] and [type(v) for v in decoded[:3]] == [float, int, bool]
    assert decoded[3].tolist() == [0.0, 1.0, 2.0]
    assert all(
        isinstance(v, codec.Opaque) and v.type_name == "function" for v in decoded[4:]
    )  # callables
    assert len(handles) == 3


# ---------------------------------------------------------------- class 4: points that cannot be
# forged


def test_learner_code_cannot_read_the_truth_from_the_call_stack(tmp_path):
    import inspect

    def make_position_scaler(positions, factor):
        def scale(x):
            for frame in inspect.stack():  # looks for the check's expected value in its callers
                for name in ("expected", "truth", "want"):
                    if name in frame.frame.f_locals:
                        return frame.frame.f_locals[name].clone()
            return x.clone()  # no truth found: an unscaled copy (wrong)

        return scale

    verdict = record_and_judge(
        tmp_path,
        HIDDEN.format("position_scaler", "make_position_scaler"),
        {"make_position_scaler": make_position_scaler},
        5,
        5,
    )
    assert not verdict.passed, verdict.message  # the truth did not exist yet when scale() ran


LOOKUP = {
    (10, 2, 3): 16,
    (2, 7, -1): -5,
    (6, 3, 1): 9,
    (-4, 2, 2): 0,
}  # visible + fixed hidden cases: (fixed_value, a, b) -> (a * b) + fixed_value


def lookup_lambda(fixed_value):
    return lambda a, b: LOOKUP.get((fixed_value, a, b), 0)


def test_a_lookup_table_of_the_fixed_hidden_inputs_fails_at_grading(tmp_path):
    source = HIDDEN.format("multiplier_and_adder_lambda", "multiplier_and_adder_lambda")
    # in a notebook (no grading seed) the fixed hidden inputs are unchanged, so the table covers
    # them
    hooks.check_multiplier_and_adder_lambda(lookup_lambda, hidden=True)
    verdict = record_and_judge(
        tmp_path, source, {"multiplier_and_adder_lambda": lookup_lambda}, 11, 11
    )
    assert not verdict.passed and "expected" in verdict.message

    def honest(fixed_value):
        return lambda a, b: (a * b) + fixed_value

    verdict = record_and_judge(
        tmp_path / "honest", source, {"multiplier_and_adder_lambda": honest}, 11, 11
    )
    assert verdict.passed, verdict.message


def test_a_kernel_that_changes_the_seed_only_loses(tmp_path):
    def honest(fixed_value):
        return lambda a, b: (a * b) + fixed_value

    source = HIDDEN.format("multiplier_and_adder_lambda", "multiplier_and_adder_lambda")
    verdict = record_and_judge(tmp_path, source, {"multiplier_and_adder_lambda": honest}, 1, 2)
    assert not verdict.passed and "different inputs" in verdict.message


def test_hidden_inputs_depend_on_the_grading_seed():
    drawn = {}
    for seed in (1, 2, None):
        previous = checks.set_grading_seed(seed)
        try:
            rng = checks.hidden_rng("02.3")
            drawn[seed] = None if rng is None else [checks.random_prompt(rng) for _ in range(3)]
        finally:
            checks.set_grading_seed(previous)
    assert drawn[None] is None and drawn[1] != drawn[2]


# ---------------------------------------------------------------- class 2: records cannot reach the
# grader


def _write_record(folder, record: dict, blob: bytes = b"") -> None:
    (folder / "cell.json").write_text(json.dumps(record))
    (folder / "cell.bin").write_bytes(blob)


def test_records_are_read_without_following_links(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text('{"grade_id": "cell", "names": {}, "calls": [], "SECRET": 1}')
    records = tmp_path / "records"
    records.mkdir()
    (records / "cell.json").symlink_to(secret)
    (records / "cell.bin").write_bytes(b"")
    with pytest.raises(codec.DecodeError, match="not a regular file"):
        read_record(str(records), "cell")
    verdict = Judge.__new__(Judge)
    verdict.snapshots = {"cell": {}}
    result = verdict.grade(GradeCell("cell", 0, "pass", 1.0, "ex", []), str(records))
    assert not result.passed and "SECRET" not in result.message


def test_a_fifo_record_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "cell.json")
    (tmp_path / "cell.bin").write_bytes(b"")
    start = time.monotonic()
    with pytest.raises(codec.DecodeError, match="not a regular file"):
        read_record(str(tmp_path), "cell")
    assert time.monotonic() - start < 5


def test_oversized_records_are_refused_on_the_descriptor(tmp_path, monkeypatch):
    monkeypatch.setattr(judge_module, "MAX_JSON_BYTES", 1000)
    _write_record(tmp_path, {"grade_id": "cell", "pad": "x" * 5000})
    with pytest.raises(codec.DecodeError, match="too large"):
        read_record(str(tmp_path), "cell")


def test_a_record_folder_swapped_for_a_link_is_not_followed(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    _write_record(records, {"grade_id": "cell", "names": {}, "calls": []})
    fd = judge_module.open_record_folder(
        str(records)
    )  # what the batch does before the kernel starts
    try:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        _write_record(elsewhere, {"grade_id": "cell", "names": {}, "calls": [], "forged": True})
        records.rename(tmp_path / "moved")
        records.symlink_to(elsewhere)
        record, _ = read_record(fd, "cell")
        assert "forged" not in record
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        judge_module.open_record_folder(str(records))  # a link is never opened as the folder


def test_replay_is_bounded_in_callbacks_and_decoded_bytes(monkeypatch):
    import torch

    flood = {
        "calls": [
            {
                "handle": 1,
                "args": {"__list__": [{"__callable__": 2}]},
                "result": None,
                "callbacks": [{"arg": 0, "args": {"__list__": []}}] * 20_000,
            }
        ]
    }
    state = _ReplayState(flood, b"")
    with pytest.raises(codec.DecodeError, match="too many recorded callbacks"):
        state.next_result(1, "f", [lambda: None], {})

    monkeypatch.setattr(judge_module, "MAX_DECODED_PER_SUBMISSION", 3 << 20)
    encoder = codec.Encoder()
    spec = encoder.encode(torch.zeros(1 << 18))  # 1 MiB of float32, referenced by every call
    record = {"calls": [{"handle": 1, "args": {"__list__": []}, "result": spec}] * 10}
    budget = Budget()
    state = _ReplayState(record, bytes(encoder.blob), budget)
    with pytest.raises(codec.DecodeError, match="too much data"):
        for _ in range(10):
            state.next_result(1, "f", [], {})
    assert budget.decoded <= 4 << 20


def test_every_judge_step_has_a_timeout(tmp_path):
    _write_record(tmp_path, {"grade_id": "cell", "names": {}, "calls": []})
    judge = Judge.__new__(Judge)
    judge.snapshots = {"cell": {}}
    start = time.monotonic()
    verdict = judge.grade(
        GradeCell("cell", 0, "while True:\n    pass", 1.0, "ex", []), str(tmp_path), timeout=0.5
    )
    assert not verdict.passed and "judging took more than" in verdict.message
    assert time.monotonic() - start < 10


def test_time_limit_is_a_no_op_outside_the_main_thread():
    done = []

    def worker():
        with time_limit(0.01):
            time.sleep(0.05)
        done.append(True)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert done == [True]


# ---------------------------------------------------------------- lesson 02 with the model (slow)


@pytest.fixture(scope="module")
def model():
    from course_utils.model import load_model

    return load_model(device="cpu")


def kernel_and_grader_with_model(folder, model, source, learner, seed=9, kernel_source=None):
    """(whether the "kernel" ran the check cell without an error, the grader's verdict).

    The "kernel" runs ``kernel_source`` (an edited check cell) when given, else ``source``; what the
    learner's code patches in the check modules there is undone before the grader judges, as it
    would stay in the student's process."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(learner)
    cell = GradeCell("cell", 0, source, 1.0, "ex", names)
    trusted = {"checks": hooks, "model": model}
    kernel_namespace = dict(trusted, **learner)
    saved = {module: dict(vars(module)) for module in (checks, hooks)}
    results = list(checks.RESULTS)
    recorder = Recorder(str(folder))
    recorder.begin("cell", names, kernel_namespace)
    previous = checks.set_grading_seed(seed)
    try:
        exec(kernel_source or source, kernel_namespace)
        kernel_ok = True
    except Exception:
        kernel_ok = False
    finally:
        checks.set_grading_seed(previous)
        recorder.end()
        for module, attributes in saved.items():
            for key in set(vars(module)) - set(attributes):
                delattr(module, key)
            for key, value in attributes.items():
                if vars(module).get(key) is not value:
                    setattr(module, key, value)
        checks.RESULTS[:] = results
        model.reset_hooks(including_permanent=True)
    judge = Judge.__new__(Judge)
    judge.snapshots = {"cell": trusted}
    return kernel_ok, judge.grade(cell, str(folder), seed=seed)


def record_and_judge_with_model(folder, model, source, learner, seed=9):
    return kernel_and_grader_with_model(folder, model, source, learner, seed)[1]


@pytest.mark.slow
def test_resid_post_stack_is_replayed_with_the_spy_calls(tmp_path, model):
    """02.5 asks for run_with_cache with a names filter: the learner's calls on the check's spy are
    recorded in the kernel and repeated on the grader's spy, so the grader decides this cell."""
    import torch

    def honest(model, prompt):
        names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
        with torch.no_grad():
            _, cache = model.run_with_cache(
                model.to_tokens(prompt), names_filter=lambda name: name in names
            )
        return torch.stack([cache[name][0] for name in names])

    def no_filter(model, prompt):
        with torch.no_grad():
            _, cache = model.run_with_cache(model.to_tokens(prompt))
        return torch.stack(
            [cache[f"blocks.{layer}.hook_resid_post"][0] for layer in range(model.cfg.n_layers)]
        )

    source = (
        "checks.check_resid_post_stack(resid_post_stack, model)\n"
        "checks.check_resid_post_stack(resid_post_stack, model, hidden=True)"
    )
    verdict = record_and_judge_with_model(
        tmp_path / "honest", model, source, {"resid_post_stack": honest}
    )
    assert verdict.passed, verdict.message
    verdict = record_and_judge_with_model(
        tmp_path / "no_filter", model, source, {"resid_post_stack": no_filter}
    )
    assert not verdict.passed and "names_filter" in verdict.message


@pytest.mark.slow
def test_a_hook_cannot_read_the_truth_from_the_call_stack(tmp_path, model):
    import inspect

    def make_zero_ablation(positions):
        positions = [positions] if isinstance(positions, int) else list(positions)

        def hook(activation, hook=None):
            for frame in inspect.stack():
                for name in ("expected", "truth", "clean"):
                    found = frame.frame.f_locals.get(name)
                    if found is not None:
                        found = found if not isinstance(found, dict) else next(iter(found.values()))
                        if getattr(found, "shape", None) == activation.shape:
                            return found.clone()
            return activation.clone()  # no truth found: nothing zeroed (wrong)

        return hook

    source = "checks.check_zero_ablation(make_zero_ablation, model)"
    verdict = record_and_judge_with_model(
        tmp_path, model, source, {"make_zero_ablation": make_zero_ablation}
    )
    assert not verdict.passed, verdict.message


# 02.9 temporary_hooks: what the learner's context manager does to the model (which hooks are
# attached where after the call, after entering and after leaving, with or without an exception) is
# recorded, and the grader puts its own model in the same state at the same steps; its own check
# decides.

TEMPORARY_HOOKS = HIDDEN.format("temporary_hooks", "temporary_hooks, model")
PASS_LINE = (
    "✅ 02.9 temporary_hooks: hooks run inside the with-block and are gone afterwards, even after "
    "an exception"
)


def _contextmanager_with_finally(model, fwd_hooks):
    try:
        for name, hook_fn in fwd_hooks:
            model.add_hook(name, hook_fn)
        yield model
    finally:
        model.reset_hooks()


class _TemporaryHooks:
    """A class-based context manager, as a learner might write it."""

    def __init__(self, model, fwd_hooks):
        self.model, self.fwd_hooks = model, list(fwd_hooks)

    def __enter__(self):
        for name, hook_fn in self.fwd_hooks:
            self.model.add_hook(name, hook_fn)
        return self.model

    def __exit__(self, exc_type, exc, tb):
        self.model.reset_hooks()
        return False


class _TemporaryHooksReraising(_TemporaryHooks):
    """Re-raises the exception itself instead of returning False: the check must still see it."""

    def __exit__(self, exc_type, exc, tb):
        self.model.reset_hooks()
        if exc is not None:
            raise exc


def _library_context_manager(model, fwd_hooks):
    return model.hooks(fwd_hooks=fwd_hooks)  # TransformerLens's own, returned unchanged


def _learner_class(cls):
    cls.__module__ = "__main__"  # as when defined in a notebook cell
    return cls


@pytest.mark.slow
@pytest.mark.parametrize(
    "temporary_hooks",
    [
        contextlib.contextmanager(_contextmanager_with_finally),
        _learner_class(_TemporaryHooks),
        _learner_class(_TemporaryHooksReraising),
        _library_context_manager,
    ],
    ids=["contextmanager", "class", "class_reraising", "model_hooks"],
)
def test_honest_temporary_hooks_score(tmp_path, model, temporary_hooks):
    kernel_ok, verdict = kernel_and_grader_with_model(
        tmp_path, model, TEMPORARY_HOOKS, {"temporary_hooks": temporary_hooks}
    )
    assert kernel_ok and verdict.passed, verdict.message


@contextlib.contextmanager
def _leaks_on_error(model, fwd_hooks):
    for name, hook_fn in fwd_hooks:
        model.add_hook(name, hook_fn)
    yield model
    model.reset_hooks()  # never reached when the with-block raises


@contextlib.contextmanager
def _attaches_nothing(model, fwd_hooks):
    yield model


@contextlib.contextmanager
def _swallows_the_error(model, fwd_hooks):
    for name, hook_fn in fwd_hooks:
        model.add_hook(name, hook_fn)
    try:
        yield model
    except Exception:
        pass
    finally:
        model.reset_hooks()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("temporary_hooks", "reason"),
    [
        (_leaks_on_error, "left attached after an exception"),
        (_attaches_nothing, "the hook should be attached"),
        (_swallows_the_error, "swallowed"),
    ],
    ids=["leaks_on_error", "attaches_nothing", "swallows_the_error"],
)
def test_wrong_temporary_hooks_score_zero(tmp_path, model, temporary_hooks, reason):
    kernel_ok, verdict = kernel_and_grader_with_model(
        tmp_path, model, TEMPORARY_HOOKS, {"temporary_hooks": temporary_hooks}
    )
    assert not kernel_ok and not verdict.passed and reason in verdict.message, verdict.message


@contextlib.contextmanager
def _silences_the_check(model, fwd_hooks):
    hooks.expect = lambda condition, message: None  # every condition of the check now "holds"
    yield model


_SWALLOWED_CHECK = (
    "import course_utils.checks as _checks\n"
    "try:\n"
    + "".join(f"    {line}\n" for line in TEMPORARY_HOOKS.splitlines())
    + "except Exception:\n"
    "    pass\n"
    "_checks.RESULTS[:] = [_checks.CheckResult('02.9 temporary_hooks', True, 'forged')]\n"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("temporary_hooks", "kernel_source"),
    [
        (_attaches_nothing, f"print({PASS_LINE!r})"),  # the check cell replaced by its pass line
        (_leaks_on_error, _SWALLOWED_CHECK),  # the failure swallowed, RESULTS rewritten
        (
            _attaches_nothing,
            "checks.check_temporary_hooks = lambda *args, **kwargs: print('passed')\n"
            + TEMPORARY_HOOKS,
        ),
        (_silences_the_check, TEMPORARY_HOOKS),  # the learner's own code patches the check
    ],
    ids=["prints_a_pass", "patches_results", "replaces_the_check", "patches_expect"],
)
def test_a_forged_temporary_hooks_verdict_scores_zero(
    tmp_path, model, temporary_hooks, kernel_source
):
    """Each forgery passes in the kernel (the kernel's own verdict would have given the point);
    the grader's replay of what the learner's code did to the model gives 0."""
    kernel_ok, verdict = kernel_and_grader_with_model(
        tmp_path, model, TEMPORARY_HOOKS, {"temporary_hooks": temporary_hooks}, 9, kernel_source
    )
    assert kernel_ok, "the forgery should have fooled the kernel's own check"
    assert not verdict.passed, verdict.message


@pytest.mark.slow
def test_a_hook_other_than_the_given_one_is_not_replayed(tmp_path, model):
    """The grader can attach only the hook functions its check passed in; a wrapper of them is
    named in the message (a limit of the replay, not a forgery)."""

    @contextlib.contextmanager
    def wraps_the_hook(model, fwd_hooks):
        try:
            for name, hook_fn in fwd_hooks:
                model.add_hook(name, lambda activation, hook, fn=hook_fn: fn(activation, hook))
            yield model
        finally:
            model.reset_hooks()

    kernel_ok, verdict = kernel_and_grader_with_model(
        tmp_path, model, TEMPORARY_HOOKS, {"temporary_hooks": wraps_the_hook}
    )
    assert kernel_ok and not verdict.passed and "other than the hook functions" in verdict.message


@pytest.mark.slow
def test_every_lesson02_graded_cell_is_replayed():
    """The grader replays the solution's own records of every graded cell before grading anyone
    (02.9 temporary_hooks included) and passes them all."""
    from course_utils.grading.lesson import load_lesson

    lesson = load_lesson("02_hooks")
    judge = Judge(lesson)
    assert set(judge.self_test) == {c.grade_id for c in lesson.grade_cells}
    assert "✅ 02.9 temporary_hooks" in judge.self_test["check02_temporary_hooks"]


def test_a_lesson_with_a_cell_the_records_cannot_carry_is_refused():
    """A check that observes an effect no record carries (here: the learner's function appends to a
    list the check passed in) fails the self-test on the solution itself, and the grader refuses the
    lesson rather than fall back on the kernel's forgeable verdict."""
    from pathlib import Path

    from course_utils.grading.lesson import Lesson

    def fill(box):
        box.append(1)  # an in-place edit of a list: not recorded (only tensors are)

    source = "box = []\nfill(box)\nassert box == [1], 'fill did not fill the box'"
    cell = GradeCell("check99_fill", 0, source, 1.0, "ex99_fill", ["fill"])
    judge = Judge.__new__(Judge)
    judge.lesson = Lesson("99_fill", Path("99_fill.ipynb"), None, [cell], ["ex99_fill"])
    judge.snapshots = {"check99_fill": {"fill": fill}}
    judge.self_test = {}
    with pytest.raises(RuntimeError, match="check99_fill cannot be graded by replay"):
        judge._test_replay_on_the_solution()
