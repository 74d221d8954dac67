"""Tests of course_utils/quizzes.py: the bank keeps no readable keys, widgets and answer() both judge
and record, graded cells fail on wrong answers, bad input gives a message instead of a traceback."""

import json
from pathlib import Path

import pytest

from course_utils import checks
from course_utils.checks import CheckFailed
from course_utils.exercises import NOTEBOOKS
from course_utils.quizzes import (BANK_DIR, SPEC_DIR, QuizFailed, QuizInputError, build_bank, dumps,
                                  load_quiz, main)

LESSON = "03_corruption_quizzes"
SPEC = json.loads((SPEC_DIR / f"{LESSON}.json").read_text())
QUESTIONS = {q["id"]: q for q in SPEC["questions"]}


@pytest.fixture
def quiz():
    return load_quiz(LESSON)


def _right_and_wrong(question):
    """(a right response, a wrong response) from the author's spec."""
    if question["kind"] == "choice":
        wrong = next(k for k in question["options"] if k != question["answer"])
        return question["answer"], wrong
    if question["kind"] == "numeric":
        return question["answer"], question["answer"] + 3 * question["tolerance"]
    return question["answers"][0], "[999]"


def test_bank_is_built_from_the_spec_and_up_to_date():
    assert (BANK_DIR / f"{LESSON}.json").read_text() == dumps(build_bank(SPEC)), \
        "run: python -m course_utils.quizzes build solutions/quizzes/03_corruption_quizzes.json"
    assert main(["check", str(SPEC_DIR / f"{LESSON}.json")]) == 0
    assert len(SPEC["questions"]) >= 8


def test_keys_and_explanations_are_not_readable_in_the_bank_or_student_notebook():
    bank_text = (BANK_DIR / f"{LESSON}.json").read_text()
    student_text = (NOTEBOOKS / f"{LESSON}.ipynb").read_text()
    for question in SPEC["questions"]:
        texts = question.get("explanations", {}).values() if question["kind"] == "choice" else [question["explanation"]]
        for text in texts:
            assert text not in bank_text and json.dumps(text)[1:-1] not in bank_text
        assert '"answer"' not in bank_text and '"explanations"' not in bank_text
    assert '"secret"' not in bank_text and SPEC["secret"] not in bank_text and SPEC["secret"] not in student_text
    for qid, question in QUESTIONS.items():
        right, _ = _right_and_wrong(question)
        assert f"{qid} = {json.dumps(right)}" not in student_text


@pytest.mark.parametrize("qid", list(QUESTIONS))
def test_every_question_accepts_its_key_and_rejects_a_wrong_answer(quiz, qid):
    question = QUESTIONS[qid]
    right, wrong = _right_and_wrong(question)
    good, bad = quiz.evaluate(qid, right), quiz.evaluate(qid, wrong)
    assert good.passed and not bad.passed
    if question["kind"] == "choice":  # every option, right or wrong, explains itself
        for key, text in question["explanations"].items():
            feedback = quiz.evaluate(qid, key.lower())
            assert feedback.text == text and feedback.passed == (key == question["answer"])
    else:
        assert good.text == question["explanation"] and bad.text == question["hint"]


def test_numeric_tolerance_and_code_normalisation(quiz):
    key, tol = QUESTIONS["q3"]["answer"], QUESTIONS["q3"]["tolerance"]
    for delta in (-tol, -tol / 2, 0.0, tol / 2, tol):
        assert quiz.evaluate("q3", key + delta).passed, delta
    for delta in (-2.01 * tol, 2.01 * tol, 1.0):
        assert not quiz.evaluate("q3", key + delta).passed, delta
    assert quiz.evaluate("q3", str(key)).passed and quiz.evaluate("q10", 76).passed
    import torch

    assert quiz.evaluate("q3", torch.tensor(key)).passed
    assert quiz.evaluate("q9", " [ 4 ] ").passed and quiz.evaluate("q9", "list(range(4, 5))").passed
    assert not quiz.evaluate("q9", "[3]").passed


def test_fallback_answer_prints_records_and_never_raises(quiz, capsys):
    before = len(checks.RESULTS)
    assert quiz.answer("q1", "C") is True
    assert quiz.answer("q1", "A") is False
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("✅ 03.q1: correct (C)") and out[1].startswith("❌ 03.q1: not quite (A)")
    recorded = checks.RESULTS[before:]
    assert [(r.exercise, r.passed) for r in recorded] == [("03.q1", True), ("03.q1", False)]


@pytest.mark.parametrize("qid,response,message", [
    ("q99", "A", "unknown question 'q99'; this quiz has q1"),
    (3, "A", "unknown question 3"),
    ("q1", 2, "expected one of the letters 'A', 'B', 'C', got 2"),
    ("q1", "Z", "expected one of the letters"),
    ("q1", None, "no answer yet"),
    ("q3", "about a half", "expected a number"),
    ("q3", [0.1], "expected a number"),
    ("q3", True, "bool"),
    ("q3", float("nan"), "finite"),
    ("q9", 4, "put the code in quotes"),
])
def test_bad_input_gives_a_message_not_a_traceback(quiz, capsys, qid, response, message):
    before = len(checks.RESULTS)
    assert quiz.answer(qid, response) is False
    out = capsys.readouterr().out
    assert out.startswith("⚠️") and message in out and "Traceback" not in out
    assert len(checks.RESULTS) == before, "bad input is not an answer: nothing is recorded"
    with pytest.raises(QuizInputError, match="expected|unknown|no answer"):
        quiz.evaluate(qid, response)


def test_graded_check_passes_fails_and_records(quiz, capsys):
    before = len(checks.RESULTS)
    quiz.check("q2", "B")
    with pytest.raises(QuizFailed) as failure:
        quiz.check("q2", "A")
    assert isinstance(failure.value, CheckFailed)  # the batch grader and nbgrader count it as failed
    assert "03.q2" in failure.value._render_traceback_()[0]
    with pytest.raises(CheckFailed):
        quiz.check("q2", None)  # a missing answer fails too, with a message
    with pytest.raises(CheckFailed):
        quiz.check("nope", "B")
    assert [r.passed for r in checks.RESULTS[before:]] == [True, False, False, False]
    assert "no answer yet" in checks.RESULTS[-2].message and "unknown question" in checks.RESULTS[-1].message


def test_widget_click_gives_feedback_and_records(quiz):
    box = quiz.widget("q1")
    assert "Toronto" in repr(box), "the text form of the widget is the question"
    before = len(checks.RESULTS)
    box.button.click()  # nothing selected yet
    assert "no answer yet" in box.feedback.value and len(checks.RESULTS) == before
    box.input.value = "A"
    box.button.click()
    assert box.feedback.value.startswith("❌ 03.q1: not quite (A)")
    box.input.value = "C"
    box.button.click()
    assert box.feedback.value.startswith("✅ 03.q1: correct (C)")
    assert [(r.exercise, r.passed) for r in checks.RESULTS[before:]] == [("03.q1", False), ("03.q1", True)]


def test_numeric_and_code_widgets(quiz):
    box = quiz.widget("q3")
    box.input.value = "nonsense"
    box.button.click()
    assert box.feedback.value.startswith("⚠️") and "expected a number" in box.feedback.value
    box.input.value = str(QUESTIONS["q3"]["answer"])
    box.button.click()
    assert box.feedback.value.startswith("✅ 03.q3")
    code = quiz.widget("q9")
    code.input.value = "[4]"
    code.button.click()
    assert code.feedback.value.startswith("✅ 03.q9")


def test_show_prints_the_text_outside_jupyter(quiz, capsys):
    quiz.show("q4")
    out = capsys.readouterr().out
    assert out.startswith("03.q4:") and "B) other city names" in out and 'answer("q4"' in out
    quiz.show("missing")
    assert "unknown question" in capsys.readouterr().out


def test_build_rejects_bad_specs():
    spec = json.loads(json.dumps(SPEC))
    spec["questions"][0]["answer"] = "Z"
    with pytest.raises(ValueError, match="must be an option"):
        build_bank(spec)
    spec = json.loads(json.dumps(SPEC))
    spec["questions"][1]["id"] = spec["questions"][0]["id"]
    with pytest.raises(ValueError, match="unique"):
        build_bank(spec)
    with pytest.raises(FileNotFoundError, match="banks: .*03_corruption_quizzes"):
        load_quiz("99_nothing")


def test_graded_quiz_cells_follow_the_grader_convention():
    import nbformat

    from course_utils.exercises import SOLUTIONS, exercises

    nb = nbformat.read(SOLUTIONS / f"{LESSON}.ipynb", as_version=4)
    quiz_checks = [c for e in exercises(nb) for c in e.check_ids if c.startswith("quiz")]
    assert sorted(quiz_checks) == sorted(f"quiz03_{qid}" for qid in QUESTIONS)
