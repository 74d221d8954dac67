"""Quizzes (lesson 03): predict first, then measure; answered by clicking or by calling ``answer``.

A lesson's questions live in a *bank*, ``course_utils/data/quizzes/<lesson>.json``. The bank holds the
question text and options in clear, but never an answer key: for each accepted response it stores a
salted SHA-256 hash, and the feedback for that response encrypted with a key derived from the response
itself. So the file tells a reader nothing until they give an answer, and an answer reveals only its own
feedback. (A multiple-choice key can of course be found by trying every option, as in any quiz with
immediate feedback; the graded answer is the one written in the notebook.) The bank is built from the
author's plain-text spec, kept with the solution notebooks (``solutions/quizzes/``)::

    python -m course_utils.quizzes build solutions/quizzes/03_corruption_quizzes.json

Four kinds of question:

* ``choice``: one letter among the options; every option, right or wrong, has its explanation;
* ``numeric``: a number; any response within ``tolerance`` of the key is accepted, and none further than
  ``2 * tolerance`` (responses are compared by ``floor(x / tolerance)`` buckets, so only hashes are stored);
* ``code``: a short expression, compared with the accepted forms after removing all whitespace;
* ``prediction``: a number the learner guesses *before* a measurement. It has no key and is never graded
  (grading a guess penalises an honest one): ``answer`` records it in ``quiz.predictions`` and
  ``quiz.compare(qid, measured)`` prints it next to the measurement. Grade the reading of the result
  with a ``choice`` question placed after it instead. ``check`` refuses a prediction.

In a notebook::

    quiz = load_quiz("03_corruption_quizzes")
    quiz.show("q1")            # a widget with a Check button and immediate feedback (text where widgets don't render)
    quiz.answer("q1", "B")     # the same without widgets: prints feedback, never raises
    quiz.check("q1", q1)       # graded cells: like answer, but a wrong answer fails the cell
    quiz.answer("q3", 0.2)     # a prediction: recorded, not judged
    quiz.compare("q3", 0.012)  # after measuring: one line with the prediction and the measurement

Every judged answer (click, ``answer`` or ``check``) appends a ``CheckResult`` named
``"<NN>.<question id>"`` (``"03.q1"``) to ``course_utils.checks.RESULTS``; predictions are not judged and
go to ``quiz.predictions`` only. Bad input (an unknown id, a number where a letter was
asked) prints what was expected instead of raising.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import html
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checks import RESULTS, CheckFailed, CheckResult

BANK_DIR = Path(__file__).resolve().parent / "data" / "quizzes"
SPEC_DIR = Path(__file__).resolve().parent.parent / "solutions" / "quizzes"
KINDS = ("choice", "numeric", "code", "prediction")
JUDGED_KINDS = ("choice", "numeric", "code")


class QuizInputError(ValueError):
    """A response the quiz cannot judge (unknown question, wrong type); the message says what to
    pass."""


class QuizFailed(CheckFailed):
    """A graded quiz answer that is wrong or missing. IPython shows one line instead of a
    traceback."""

    def _render_traceback_(
        self,
    ) -> list[str]:  # IPython calls this instead of printing the traceback
        return [
            f"{self.result.exercise}: not passed yet (see the line above); change your answer and "
            "re-run."
        ]


# ---- hashing and sealing -------------------------------------------------------------------------


def _digest(salt: str, purpose: str, response: str) -> str:
    return hashlib.sha256(f"{salt}\x1f{purpose}\x1f{response}".encode()).hexdigest()


def _keystream(key: str, length: int) -> bytes:
    blocks, counter = [], 0
    while sum(map(len, blocks)) < length:
        blocks.append(hashlib.sha256(f"{key}\x1f{counter}".encode()).digest())
        counter += 1
    return b"".join(blocks)[:length]


def _seal(text: str, key: str) -> str:
    data = text.encode()
    return base64.b64encode(
        bytes(a ^ b for a, b in zip(data, _keystream(key, len(data)), strict=False))
    ).decode()


def _unseal(token: str, key: str) -> str:
    data = base64.b64decode(token)
    return bytes(a ^ b for a, b in zip(data, _keystream(key, len(data)), strict=False)).decode()


# ---- responses -----------------------------------------------------------------------------------


def _kind_help(question: dict) -> str:
    if question["kind"] == "choice":
        return f"one of the letters {', '.join(repr(k) for k in question['options'])}"
    if question["kind"] in ("numeric", "prediction"):
        return "a number (an int or a float, e.g. 0.25)"
    return 'a short piece of code, as a string (e.g. "[1, 2]")'


def candidate_forms(question: dict, response: Any) -> list[str]:
    """The normalised forms of ``response`` to look up in the bank; ``QuizInputError`` if
    unusable."""
    kind = question["kind"]
    if response is None:
        raise QuizInputError(f"no answer yet: give {_kind_help(question)}")
    if kind == "choice":
        if not isinstance(response, str) or response.strip().upper() not in question["options"]:
            raise QuizInputError(f"expected {_kind_help(question)}, got {response!r}")
        return [response.strip().upper()]
    if kind in ("numeric", "prediction"):
        if isinstance(response, str):
            try:
                response = float(response.strip())
            except ValueError:
                raise QuizInputError(
                    f"expected {_kind_help(question)}, got the text {response!r}"
                ) from None
        if isinstance(response, bool):
            raise QuizInputError(f"expected {_kind_help(question)}, got the bool {response!r}")
        try:
            value = float(response)  # ints, floats, NumPy and one-element torch scalars
        except (TypeError, ValueError, RuntimeError):
            raise QuizInputError(
                f"expected {_kind_help(question)}, got {type(response).__name__} {response!r}"
            ) from None
        if not math.isfinite(value):
            raise QuizInputError(f"expected a finite number, got {value}")
        if kind == "prediction":
            return [repr(value)]
        bucket = math.floor(value / question["tolerance"])
        return [str(bucket + offset) for offset in (0, -1, 1)]
    if not isinstance(response, str):
        raise QuizInputError(
            f"expected {_kind_help(question)}, got {type(response).__name__} {response!r}; "
            "put the code in quotes"
        )
    return ["".join(response.split())]


# ---- building a bank from the author's spec ------------------------------------------------------


def _accepted(question: dict) -> list[tuple[str, bool, str]]:
    """(normalised response, correct?, feedback) for every response the bank stores."""
    kind = question["kind"]
    if kind == "choice":
        if question["answer"] not in question["options"] or set(question["explanations"]) != set(
            question["options"]
        ):
            raise ValueError(
                f"{question['id']}: the answer must be an option and every option needs an "
                "explanation"
            )
        return [
            (key, key == question["answer"], question["explanations"][key])
            for key in question["options"]
        ]
    if kind == "numeric":
        return [
            (
                str(math.floor(question["answer"] / question["tolerance"])),
                True,
                question["explanation"],
            )
        ]
    return [("".join(form.split()), True, question["explanation"]) for form in question["answers"]]


def build_bank(spec: dict) -> dict:
    """The bank (hashed keys, sealed feedback) for an author's spec; deterministic for a given
    spec."""
    questions = []
    for question in spec["questions"]:
        if question.get("kind") not in KINDS:
            raise ValueError(f"{question.get('id')}: kind must be one of {KINDS}")
        if question["kind"] == "prediction":  # no key: nothing to hash or seal
            if {"answer", "answers", "explanation", "explanations"} & set(question):
                raise ValueError(
                    f"{question['id']}: a prediction has no answer key or explanation; "
                    "put the reading of the result in a choice question after it"
                )
            questions.append(
                {"id": question["id"], "kind": "prediction", "question": question["question"]}
            )
            continue
        salt = hmac.new(
            spec["secret"].encode(), question["id"].encode(), hashlib.sha256
        ).hexdigest()[:32]
        entry = {
            "id": question["id"],
            "kind": question["kind"],
            "question": question["question"],
            "salt": salt,
        }
        if question["kind"] == "choice":
            entry["options"] = question["options"]
        else:
            entry["hint"] = question["hint"]
        if question["kind"] == "numeric":
            entry["tolerance"] = question["tolerance"]
        entry["entries"] = {
            _digest(salt, "answer", form): _seal(
                json.dumps({"correct": correct, "text": text}), _digest(salt, "feedback", form)
            )
            for form, correct, text in _accepted(question)
        }
        questions.append(entry)
    ids = [q["id"] for q in questions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"question ids must be unique, got {ids}")
    return {"lesson": spec["lesson"], "title": spec["title"], "questions": questions}


# ---- feedback ------------------------------------------------------------------------------------


@dataclass
class Feedback:
    passed: bool
    text: str
    response: str

    def message(self) -> str:
        verdict = "correct" if self.passed else "not quite"
        return f"{verdict} ({self.response}) — {self.text}"


class Quiz:
    """The questions of one lesson; see the module docstring."""

    def __init__(self, bank: dict):
        self.lesson = str(bank["lesson"])
        self.title = bank["title"]
        self.questions = {q["id"]: q for q in bank["questions"]}
        self.predictions: dict[str, float] = {}  # question id -> the learner's latest prediction

    def ids(self) -> list[str]:
        return list(self.questions)

    def exercise_id(self, qid: str) -> str:
        return f"{self.lesson}.{qid}"

    def _question(self, qid: Any) -> dict:
        if not isinstance(qid, str) or qid not in self.questions:
            raise QuizInputError(
                f"unknown question {qid!r}; this quiz has {', '.join(self.questions)}"
            )
        return self.questions[qid]

    def evaluate(self, qid: str, response: Any) -> Feedback:
        """Judge ``response`` without printing or recording; ``QuizInputError`` for unusable input
        (and for a prediction, which has no key to judge against)."""
        question = self._question(qid)
        if question["kind"] == "prediction":
            raise QuizInputError(
                f"{qid} is an ungraded prediction: record it with answer({qid!r}, value)"
            )
        forms = candidate_forms(question, response)
        shown = forms[0] if question["kind"] != "numeric" else f"{float(response):.4g}"
        for form in forms:
            sealed = question["entries"].get(_digest(question["salt"], "answer", form))
            if sealed is not None:
                content = json.loads(_unseal(sealed, _digest(question["salt"], "feedback", form)))
                return Feedback(content["correct"], content["text"], shown)
        return Feedback(False, question.get("hint", "try again"), shown)

    def _record(self, qid: str, feedback: Feedback) -> CheckResult:
        result = CheckResult(self.exercise_id(qid), feedback.passed, feedback.message())
        RESULTS.append(result)
        return result

    def record_prediction(self, qid: str, response: Any) -> float:
        """Store a prediction (a finite number) in ``self.predictions``; ``QuizInputError`` if
        unusable."""
        question = self._question(qid)
        if question["kind"] != "prediction":
            raise QuizInputError(f"{qid} is a {question['kind']} question, not a prediction")
        candidate_forms(question, response)  # validates: a finite number
        self.predictions[qid] = float(response)
        return self.predictions[qid]

    def _prediction_line(self, qid: str) -> str:
        return (
            f"📝 {self.exercise_id(qid)}: prediction recorded ({self.predictions[qid]:.4g}), not "
            "graded; "
            "the cells below measure it"
        )

    def compare(self, qid: str, measured: float, digits: int = 3) -> str:
        """One line: the learner's recorded prediction for ``qid`` next to the ``measured``
        value."""
        self._question(qid)
        guess = self.predictions.get(qid)
        said = (
            f"you predicted {guess:.{digits}f}" if guess is not None else "no prediction recorded"
        )
        return f"{self.exercise_id(qid)}: {said}; measured {float(measured):.{digits}f}"

    def answer(self, qid: str, response: Any) -> bool:
        """Judge, print one feedback line and record it; returns whether the answer is right. Never
        raises.

        For a prediction: record it and print a note; returns True once a usable number is
        recorded."""
        try:
            if self._question(qid)["kind"] == "prediction":
                self.record_prediction(qid, response)
                print(self._prediction_line(qid))
                return True
            feedback = self.evaluate(qid, response)
        except QuizInputError as error:
            print(f"⚠️ {self.lesson}.{qid if isinstance(qid, str) else '?'}: {error}")
            return False
        result = self._record(qid, feedback)
        print(result.line())
        return result.passed

    def check(self, qid: str, response: Any) -> None:
        """For graded cells: like ``answer``, but a wrong, missing or unusable answer raises
        ``QuizFailed``."""
        __tracebackhide__ = True
        if isinstance(qid, str) and self.questions.get(qid, {}).get("kind") == "prediction":
            raise QuizInputError(
                f"{qid} is an ungraded prediction and cannot be checked: record it with "
                f"answer({qid!r}, value) and grade a choice question about the result"
            )
        try:
            result = self._record(qid, self.evaluate(qid, response))
        except QuizInputError as error:
            result = CheckResult(self.exercise_id(str(qid)), False, str(error))
            RESULTS.append(result)
        print(result.line())
        if not result.passed:
            raise QuizFailed(result)

    def text(self, qid: str) -> str:
        """The question as plain text, with its options and how to answer it."""
        question = self._question(qid)
        lines = [f"{self.lesson}.{qid}: {question['question']}"]
        if question["kind"] == "choice":
            lines += [f"  {key}) {option}" for key, option in question["options"].items()]
            example = next(iter(question["options"]))
            lines.append(f'Answer with answer("{qid}", "{example}") or in the answer cell below.')
        elif question["kind"] == "prediction":
            lines.append(
                f'Not graded: write down your guess, or record it with answer("{qid}", 0.25), '
                "before you run the measurement."
            )
        else:
            lines.append(
                f'Answer with {_kind_help(question)}: answer("{qid}", ...) or in the answer cell '
                "below."
            )
        return "\n".join(lines)

    def widget(self, qid: str):
        """An ipywidgets box: the question, an input, a Check button and a feedback area.

        The box has attributes ``.input`` (RadioButtons / FloatText / Text), ``.button`` and
        ``.feedback`` (an HTML widget), so tests and notebooks can drive it without a browser.
        """
        import ipywidgets as widgets

        question = self._question(qid)
        title = widgets.HTML(
            f"<b>{html.escape(self.exercise_id(qid))}</b> {html.escape(question['question'])}"
        )
        if question["kind"] == "choice":
            entry = widgets.RadioButtons(
                options=[(f"{k}) {v}", k) for k, v in question["options"].items()],
                value=None,
                layout=widgets.Layout(width="auto"),
            )
        elif question["kind"] in ("numeric", "prediction"):
            entry = widgets.Text(placeholder="a number, e.g. 0.25")
        else:
            entry = widgets.Text(
                placeholder="code, e.g. [1, 2]", layout=widgets.Layout(width="60%")
            )
        predicting = question["kind"] == "prediction"
        button = widgets.Button(
            description="Record" if predicting else "Check", button_style="primary"
        )
        feedback = widgets.HTML("")

        def on_click(_button=None):
            try:
                if predicting:
                    self.record_prediction(qid, entry.value)
                    feedback.value = html.escape(self._prediction_line(qid))
                    return
                result = self._record(qid, self.evaluate(qid, entry.value))
            except QuizInputError as error:
                feedback.value = f"⚠️ {html.escape(str(error))}"
                return
            feedback.value = html.escape(result.line())

        button.on_click(on_click)
        box = _quiz_box_class()([title, entry, button, feedback])
        box.input, box.button, box.feedback = entry, button, feedback
        box.plain_text = self.text(qid)
        return box

    def show(self, qid: str) -> None:
        """Display the question's widget in Jupyter; elsewhere (or without ipywidgets) print its
        text."""
        try:
            self._question(qid)
        except QuizInputError as error:
            print(f"⚠️ {error}")
            return
        if _widgets_usable():
            from IPython.display import display

            display(self.widget(qid))  # where widgets do not render, its text form shows instead
        else:
            print(self.text(qid))


@functools.lru_cache(maxsize=1)
def _quiz_box_class():
    """Built on first use, so importing this module does not import ipywidgets."""
    import ipywidgets as widgets

    class QuizBox(widgets.VBox):
        """A VBox whose text form (saved notebooks, GitHub, consoles) is the question itself."""

        plain_text = ""

        def __repr__(self) -> str:
            return self.plain_text

    return QuizBox


def _widgets_usable() -> bool:
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def load_quiz(lesson: str, path: str | Path | None = None) -> Quiz:
    """The quiz of ``lesson`` (``"03_corruption_quizzes"``) from its bank in
    ``course_utils/data/quizzes``."""
    target = Path(path) if path else BANK_DIR / f"{lesson}.json"
    if not target.is_file():
        known = ", ".join(p.stem for p in sorted(BANK_DIR.glob("*.json")))
        raise FileNotFoundError(f"no quiz bank {target}; banks: {known or 'none'}")
    return Quiz(json.loads(target.read_text()))


def dumps(bank: dict) -> str:
    return json.dumps(bank, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] in ("build", "check"):
        status = 0
        for spec_path in map(Path, argv[1:]):
            bank_path = BANK_DIR / spec_path.name
            text = dumps(build_bank(json.loads(spec_path.read_text())))
            if argv[0] == "build":
                BANK_DIR.mkdir(parents=True, exist_ok=True)
                bank_path.write_text(text)
                print(f"wrote {bank_path}")
            elif not bank_path.exists() or bank_path.read_text() != text:
                print(
                    f"out of date: {bank_path} (run: python -m course_utils.quizzes build "
                    f"{spec_path})"
                )
                status = 1
        return status
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
