"""Tests of course_utils/quizzes.py: the bank keeps no readable keys, widgets and answer() both
judge and record, graded cells fail on wrong answers, predictions are recorded and never judged, bad
input gives a message instead of a traceback."""

import json

import pytest

from course_utils import checks
from course_utils.checks import CheckFailed
from course_utils.exercises import NOTEBOOKS
from course_utils.quizzes import (
    BANK_DIR,
    SPEC_DIR,
    Quiz,
    QuizFailed,
    QuizInputError,
    build_bank,
    dumps,
    load_quiz,
    main,
)

LESSON = "03_corruption_quizzes"
SPEC = json.loads((SPEC_DIR / f"{LESSON}.json").read_text())
QUESTIONS = {q["id"]: q for q in SPEC["questions"]}
JUDGED = {qid: q for qid, q in QUESTIONS.items() if q["kind"] != "prediction"}
PREDICTIONS = [qid for qid, q in QUESTIONS.items() if q["kind"] == "prediction"]

# Lesson 03 asks no graded numeric question any more; the numeric kind stays part of the API.
NUMERIC_SPEC = {
    "lesson": "99",
    "title": "test",
    "secret": "test-secret",
    "questions": [
        {
            "id": "n1",
            "kind": "numeric",
            "question": "How many?",
            "answer": 0.0123,
            "tolerance": 0.05,
            "explanation": "about 0.012",
            "hint": "think again",
        },
        {
            "id": "n2",
            "kind": "numeric",
            "question": "How many facts?",
            "answer": 76,
            "tolerance": 5,
            "explanation": "76",
            "hint": "more or fewer",
        },
    ],
}


@pytest.fixture
def quiz():
    return load_quiz(LESSON)


@pytest.fixture
def numeric_quiz():
    return Quiz(build_bank(NUMERIC_SPEC))


def _right_and_wrong(question):
    """(a right response, a wrong response) from the author's spec."""
    if question["kind"] == "choice":
        wrong = next(k for k in question["options"] if k != question["answer"])
        return question["answer"], wrong
    if question["kind"] == "numeric":
        return question["answer"], question["answer"] + 3 * question["tolerance"]
    return question["answers"][0], "[999]"


def test_bank_is_built_from_the_spec_and_up_to_date():
    assert (BANK_DIR / f"{LESSON}.json").read_text() == dumps(build_bank(SPEC)), (
        "run: python -m course_utils.quizzes build solutions/quizzes/03_corruption_quizzes.json"
    )
    assert main(["check", str(SPEC_DIR / f"{LESSON}.json")]) == 0
    assert len(SPEC["questions"]) >= 8


def test_keys_and_explanations_are_not_readable_in_the_bank_or_student_notebook():
    bank_text = (BANK_DIR / f"{LESSON}.json").read_text()
    student_text = (NOTEBOOKS / f"{LESSON}.ipynb").read_text()
    for question in JUDGED.values():
        texts = (
            question.get("explanations", {}).values()
            if question["kind"] == "choice"
            else [question["explanation"]]
        )
        for text in texts:
            assert text not in bank_text and json.dumps(text)[1:-1] not in bank_text
        assert '"answer"' not in bank_text and '"explanations"' not in bank_text
    assert (
        '"secret"' not in bank_text
        and SPEC["secret"] not in bank_text
        and SPEC["secret"] not in student_text
    )
    for qid, question in JUDGED.items():
        right, _ = _right_and_wrong(question)
        assert f"{qid} = {json.dumps(right)}" not in student_text


@pytest.mark.parametrize("qid", list(JUDGED))
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


def test_numeric_tolerance_and_code_normalisation(quiz, numeric_quiz):
    key, tol = NUMERIC_SPEC["questions"][0]["answer"], NUMERIC_SPEC["questions"][0]["tolerance"]
    for delta in (-tol, -tol / 2, 0.0, tol / 2, tol):
        assert numeric_quiz.evaluate("n1", key + delta).passed, delta
    for delta in (-2.01 * tol, 2.01 * tol, 1.0):
        assert not numeric_quiz.evaluate("n1", key + delta).passed, delta
    assert numeric_quiz.evaluate("n1", str(key)).passed and numeric_quiz.evaluate("n2", 76).passed
    assert numeric_quiz.evaluate("n1", 1.0).text == "think again"
    import torch

    assert numeric_quiz.evaluate("n1", torch.tensor(key)).passed
    assert quiz.evaluate("q9", " [ 4 ] ").passed and quiz.evaluate("q9", "list(range(4, 5))").passed
    assert not quiz.evaluate("q9", "[3]").passed


def test_fallback_answer_prints_records_and_never_raises(quiz, capsys):
    before = len(checks.RESULTS)
    assert quiz.answer("q1", "C") is True
    assert quiz.answer("q1", "A") is False
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("✅ 03.q1: correct (C)") and out[1].startswith(
        "❌ 03.q1: not quite (A)"
    )
    recorded = checks.RESULTS[before:]
    assert [(r.exercise, r.passed) for r in recorded] == [("03.q1", True), ("03.q1", False)]


@pytest.mark.parametrize(
    "qid,response,message",
    [
        ("q99", "A", "unknown question 'q99'; this quiz has q1"),
        (3, "A", "unknown question 3"),
        ("q1", 2, "expected one of the letters 'A', 'B', 'C', got 2"),
        ("q1", "Z", "expected one of the letters"),
        ("q1", None, "no answer yet"),
        ("n1", "about a half", "expected a number"),
        ("n1", [0.1], "expected a number"),
        ("n1", True, "bool"),
        ("n1", float("nan"), "finite"),
        (
            "q3",
            "about a half",
            "expected a number",
        ),  # a prediction validates its input the same way
        ("q3", None, "no answer yet"),
        ("q9", 4, "put the code in quotes"),
    ],
)
def test_bad_input_gives_a_message_not_a_traceback(
    quiz, numeric_quiz, capsys, qid, response, message
):
    target = numeric_quiz if isinstance(qid, str) and qid.startswith("n") else quiz
    before = len(checks.RESULTS)
    assert target.answer(qid, response) is False
    out = capsys.readouterr().out
    assert out.startswith("⚠️") and message in out and "Traceback" not in out
    assert len(checks.RESULTS) == before, "bad input is not an answer: nothing is recorded"
    assert target.predictions == {}
    with pytest.raises(QuizInputError, match="expected|unknown|no answer"):
        if target.questions.get(qid, {}).get("kind") == "prediction":
            target.record_prediction(qid, response)
        else:
            target.evaluate(qid, response)


@pytest.mark.parametrize("qid", PREDICTIONS)
def test_predictions_are_recorded_never_judged(quiz, capsys, qid):
    before = len(checks.RESULTS)
    assert quiz.compare(qid, 0.5).endswith("no prediction recorded; measured 0.500")
    assert (
        quiz.answer(qid, "0.3") is True and quiz.answer(qid, 2) is True
    )  # any number, the latest counts
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"📝 03.{qid}: prediction recorded (0.3), not graded")
    assert quiz.predictions == {qid: 2.0} and len(checks.RESULTS) == before, (
        "a prediction is not a check"
    )
    assert quiz.compare(qid, 0.012) == f"03.{qid}: you predicted 2.000; measured 0.012"
    with pytest.raises(QuizInputError, match="ungraded prediction"):
        quiz.evaluate(qid, 0.3)
    with pytest.raises(QuizInputError, match="cannot be checked"):
        quiz.check(qid, 0.3)  # graded cells must not grade a guess
    assert len(checks.RESULTS) == before
    assert "Not graded" in quiz.text(qid)
    with pytest.raises(QuizInputError, match="not a prediction"):
        quiz.record_prediction("q1", 0.3)


def test_prediction_widget_records(quiz):
    box = quiz.widget("q3")
    assert box.button.description == "Record"
    box.input.value = "nonsense"
    box.button.click()
    assert box.feedback.value.startswith("⚠️") and quiz.predictions == {}
    box.input.value = "0.25"
    box.button.click()
    assert box.feedback.value.startswith(
        "📝 03.q3: prediction recorded (0.25)"
    ) and quiz.predictions == {"q3": 0.25}


def test_a_prediction_carries_no_key():
    spec = json.loads(json.dumps(SPEC))
    prediction = next(q for q in spec["questions"] if q["kind"] == "prediction")
    prediction["answer"] = 0.01
    with pytest.raises(ValueError, match="no answer key"):
        build_bank(spec)
    bank = build_bank(SPEC)
    for entry in bank["questions"]:
        if entry["kind"] == "prediction":
            assert set(entry) == {"id", "kind", "question"}


def test_graded_check_passes_fails_and_records(quiz, capsys):
    before = len(checks.RESULTS)
    quiz.check("q2", "B")
    with pytest.raises(QuizFailed) as failure:
        quiz.check("q2", "A")
    assert isinstance(
        failure.value, CheckFailed
    )  # the batch grader and nbgrader count it as failed
    assert "03.q2" in failure.value._render_traceback_()[0]
    with pytest.raises(CheckFailed):
        quiz.check("q2", None)  # a missing answer fails too, with a message
    with pytest.raises(CheckFailed):
        quiz.check("nope", "B")
    assert [r.passed for r in checks.RESULTS[before:]] == [True, False, False, False]
    assert (
        "no answer yet" in checks.RESULTS[-2].message
        and "unknown question" in checks.RESULTS[-1].message
    )


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
    assert [(r.exercise, r.passed) for r in checks.RESULTS[before:]] == [
        ("03.q1", False),
        ("03.q1", True),
    ]


def test_numeric_and_code_widgets(quiz, numeric_quiz):
    box = numeric_quiz.widget("n1")
    assert box.button.description == "Check"
    box.input.value = "nonsense"
    box.button.click()
    assert box.feedback.value.startswith("⚠️") and "expected a number" in box.feedback.value
    box.input.value = str(NUMERIC_SPEC["questions"][0]["answer"])
    box.button.click()
    assert box.feedback.value.startswith("✅ 99.n1")
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
    assert sorted(quiz_checks) == sorted(f"quiz03_{qid}" for qid in JUDGED), (
        "every judged question is graded"
    )
    shown = {c.source for c in nb.cells if c.cell_type == "code"}
    for qid in PREDICTIONS:  # shown, never graded
        assert f'quiz.show("{qid}")' in shown and f"quiz03_{qid}" not in quiz_checks
