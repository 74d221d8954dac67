"""Tests for course_utils/checks/__init__.py (the framework) and checks/first_look.py (lesson
00)."""

import warnings

import pytest
import torch
from conftest import stub

from course_utils import checks
from course_utils.checks import (
    CheckFailed,
    Fail,
    call,
    compare_tensors,
    expect,
    first_look,
    measured,
    run_check,
    within,
)


def test_passing_check_prints_one_line_and_records_it(capsys):
    run_check("99.1 demo", lambda: "fine")
    out = capsys.readouterr().out
    assert out.startswith("✅ 99.1 demo: fine") and "hidden tests run at grading" in out
    assert out.count("\n") == 1
    assert checks.RESULTS[-1].passed and checks.RESULTS[-1].exercise == "99.1 demo"


def test_hidden_run_does_not_claim_hidden_tests(capsys):
    run_check("99.1 demo", lambda: "fine", hidden=True)
    assert "hidden" not in capsys.readouterr().out


def test_run_check_records_the_largest_measured_difference_and_prints_only_the_tolerance(capsys):
    def body():
        compare_tensors(torch.full((3,), 1e-6), torch.zeros(3), what="x", atol=1e-5)
        measured(3e-6)
        compare_tensors(torch.zeros(2), torch.zeros(2), what="y", atol=1e-5)
        return f"fine ({within(1e-5)})"

    run_check("99.1 demo", body)
    assert checks.RESULTS[-1].max_abs_diff == pytest.approx(3e-6)
    assert "fine (max |diff| ≤ atol 1e-05)" in capsys.readouterr().out  # no measured digits
    run_check("99.1 demo", lambda: "nothing compared")
    assert checks.RESULTS[-1].max_abs_diff is None


def test_a_failure_records_the_difference_that_failed():
    def body():
        compare_tensors(torch.tensor([0.0, 0.5]), torch.zeros(2), what="x", atol=1e-5)
        return "unreachable"

    with pytest.raises(CheckFailed):
        run_check("99.2 demo", body)
    assert checks.RESULTS[-1].max_abs_diff == pytest.approx(0.5)


def test_failing_check_prints_hint_and_raises_assertion(capsys):
    def body():
        raise Fail("wrong shape. Hint: keep the batch dimension")

    with pytest.raises(CheckFailed) as error:
        run_check("99.2 demo", body)
    assert isinstance(error.value, AssertionError)
    assert error.value.result.passed is False
    assert capsys.readouterr().out.startswith(
        "❌ 99.2 demo: wrong shape. Hint: keep the batch dimension"
    )


def test_warnings_in_learner_code_do_not_fail_a_check():
    def noisy():
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=2)
        return 3

    def body():
        expect(call(noisy) == 3, "should be 3")
        return "ok"

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # even where warnings are errors
        run_check("99.3 demo", body)
    assert checks.RESULTS[-1].passed


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda: (_ for _ in ()).throw(NotImplementedError()), "not implemented yet"),
        (lambda: 1 / 0, "raised ZeroDivisionError"),
        (42, "expected a function"),
    ],
)
def test_call_turns_learner_errors_into_messages(fn, message):
    with pytest.raises(Fail, match=message):
        call(fn)


@pytest.mark.parametrize(
    "actual, message",
    [
        ([1.0, 2.0], "expected a torch.Tensor, got list"),
        (torch.zeros(2, 3), r"wrong shape: expected \(3,\) \[d_vocab\], got \(2, 3\)"),
        (torch.zeros(3, dtype=torch.float64), "wrong dtype"),
        (torch.tensor([0.0, 0.0, 1.0]), r"values differ: max \|diff\| = 1 at index \(2,\)"),
    ],
)
def test_compare_tensors_checks_type_shape_dtype_then_values(actual, message):
    with pytest.raises(Fail, match=message):
        compare_tensors(actual, torch.zeros(3), what="probs", atol=1e-5, dims="d_vocab")


def test_compare_tensors_returns_max_diff_within_tolerance():
    assert compare_tensors(
        torch.full((3,), 1e-6), torch.zeros(3), what="x", atol=1e-5
    ) == pytest.approx(1e-6)


# lesson 00 checks: pass on a right answer, fail on the stub and on plausible mistakes


def right_probs(model, prompt):
    with torch.no_grad():
        return model(model.to_tokens(prompt))[0, -1].softmax(-1)


@pytest.mark.parametrize(
    "wrong",
    [
        stub,
        lambda model, prompt: right_probs(model, prompt)[None],  # kept the batch dim
        lambda model, prompt: model(model.to_tokens(prompt))[0, -1].detach(),  # logits, not probs
        lambda model, prompt: (
            model(model.to_tokens(prompt))[0, 0].softmax(-1).detach()
        ),  # first position
    ],
)
def test_next_token_probs_check_rejects_wrong_answers(model, wrong):
    with pytest.raises(CheckFailed):
        first_look.check_next_token_probs(wrong, model)


def test_next_token_probs_check_accepts_right_answer(model):
    first_look.check_next_token_probs(right_probs, model)
    first_look.check_next_token_probs(right_probs, model, hidden=True)


def right_top_k(model, prompt, k):
    values, indices = right_probs(model, prompt).topk(k)
    return [
        (model.tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=False)
    ]


@pytest.mark.parametrize(
    "wrong",
    [
        stub,
        lambda model, prompt, k: right_top_k(model, prompt, k)[::-1],  # least likely first
        lambda model, prompt, k: right_top_k(model, prompt, k + 1),  # off by one
        lambda model, prompt, k: [
            (t, p * 2) for t, p in right_top_k(model, prompt, k)
        ],  # wrong probabilities
    ],
)
def test_top_k_check_rejects_wrong_answers(model, wrong):
    with pytest.raises(CheckFailed):
        first_look.check_top_k(wrong, model)


def test_top_k_check_accepts_right_answer(model):
    first_look.check_top_k(right_top_k, model)


def test_failed_check_shows_one_line_in_ipython_instead_of_a_traceback():
    from course_utils.checks import CheckFailed, CheckResult

    error = CheckFailed(CheckResult("99.1 demo", False, "wrong shape"))
    lines = error._render_traceback_()
    assert len(lines) == 1 and "99.1 demo" in lines[0] and "❌" in lines[0]
    assert isinstance(
        error, AssertionError
    )  # nbgrader and the grader still count the cell as failed
