"""The course's curated facts (lesson 03): prompts whose one-token answer the model knows.

A corruption or tracing experiment asks "which part of the input carries the answer?". That
question only makes sense for a fact the model gets right to begin with: if it does not know that
the CN Tower is in Toronto, corrupting " CN" cannot destroy any knowledge.
``course_utils/data/facts.json`` holds every candidate fact that was tried, each measured on the
embedded model with the course prompt convention (``<|endoftext|>`` prepended): p(answer) at the
last position and the answer's rank among all tokens. A fact counts as *known* when its answer
ranks first. ``scripts/verify_facts.py`` re-runs the measurement (for another model too) and
reproduces the shipped numbers.

Each fact is a dict::

    {"id": "eiffel_tower_city", "subject": "The Eiffel Tower",
     "relation": "{} is located in the city of",
     "prompt": "The Eiffel Tower is located in the city of", "answer": " Paris",
     "p_answer": 0.7525, "rank": 1, "known": true, "subject_positions": [1, 2, 3, 4]}

``subject_positions`` are positions in ``model.to_tokens(prompt)`` coordinates (the BOS at 0), as
computed by ``subject_positions`` for the embedded model's tokenizer; ``subject_token_span`` gives
the same positions as a ``(start, stop)`` range, the form causal tracing (lesson 04) slices with.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).resolve().parent / "data" / "facts.json"
FACT_KEYS = (
    "id",
    "subject",
    "relation",
    "prompt",
    "answer",
    "p_answer",
    "rank",
    "known",
    "subject_positions",
)


@lru_cache(maxsize=4)
def _read(path: str) -> dict:
    return json.loads(Path(path).read_text())


def facts_file(path: str | Path | None = None) -> dict:
    """The whole facts file, a copy: ``{"model", "convention", "criterion", "facts": [...]}``."""
    return json.loads(json.dumps(_read(str(path or DATA_FILE))))


def load_facts(include_unknown: bool = False, path: str | Path | None = None) -> list[dict]:
    """The curated facts, as a list of dicts (keys in ``FACT_KEYS``).

    include_unknown: also return the candidates the model got wrong (``known`` is False); the lesson
        uses them to show what a corruption experiment on an unknown fact looks like.
    """
    facts = facts_file(path)["facts"]
    return facts if include_unknown else [fact for fact in facts if fact["known"]]


def get_fact(fact_id: str, path: str | Path | None = None) -> dict:
    """One fact (known or not) by its ``id``; a ``KeyError`` names the closest ids otherwise."""
    facts = {fact["id"]: fact for fact in load_facts(include_unknown=True, path=path)}
    if fact_id not in facts:
        import difflib

        close = difflib.get_close_matches(str(fact_id), facts, n=3)
        raise KeyError(
            f"no fact with id {fact_id!r}" + (f"; did you mean {close}?" if close else "")
        )
    return facts[fact_id]


def subject_positions(model, prompt: str, subject: str) -> list[int]:
    """Positions of the tokens that spell ``subject`` inside ``model.to_tokens(prompt)`` (BOS at 0).

    A token counts when any of its characters belongs to the first occurrence of ``subject`` in
    ``prompt``; the leading space a token carries (" Japan") does not stop it from counting.
    Raises ``ValueError`` when ``subject`` does not occur in ``prompt``.
    """
    if not isinstance(prompt, str) or not isinstance(subject, str) or not subject.strip():
        raise ValueError(
            f"prompt and subject must be strings, subject non-blank; got {prompt!r}, {subject!r}"
        )
    start = prompt.find(subject)
    if start < 0:
        raise ValueError(
            f"subject {subject!r} does not occur in prompt {prompt!r} "
            "(the match is case- and space-sensitive)"
        )
    end = start + len(subject)
    encoded = model.tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    full = [int(i) for i in model.to_tokens(prompt)[0]]
    shift = len(full) - len(ids)  # tokens prepended by to_tokens: 1 (the BOS) for the course model
    if shift < 0 or full[shift:] != list(ids):
        raise ValueError(
            "model.to_tokens(prompt) does not end with the prompt's own tokens; "
            "cannot map characters to positions for this tokenizer"
        )
    positions = [shift + index for index, (a, b) in enumerate(offsets) if a < end and b > start]
    if not positions:
        raise ValueError(f"no token of {prompt!r} covers the subject {subject!r}")
    return positions


def subject_token_span(model, prompt: str, subject: str) -> tuple[int, int]:
    """``(start, stop)``: the subject's positions (``subject_positions``) as a range, so that
    ``activation[:, start:stop]`` selects them. They are always contiguous: the tokens covering one
    stretch of characters."""
    positions = subject_positions(model, prompt, subject)
    return positions[0], positions[-1] + 1


def measure_fact(model, subject: str, relation: str, answer: str) -> dict:
    """Measure one candidate on ``model``: the prompt, p(answer), its rank (1 = top) and the
    subject's positions.

    ``relation`` is a template with one ``{}`` for the subject: ``"{} is located in the city of"``.
    """
    import torch

    from .predictions import answer_rank, answer_token_id

    if relation.count("{}") != 1:
        raise ValueError(
            f"relation must contain exactly one '{{}}' for the subject, got {relation!r}"
        )
    prompt = relation.format(subject)
    answer_id = answer_token_id(model, answer)
    with torch.no_grad():
        probs = model(model.to_tokens(prompt))[0, -1].float().softmax(-1)
    p_answer = float(probs[answer_id])
    rank = int(answer_rank(probs, answer_id))
    return {
        "prompt": prompt,
        "p_answer": round(p_answer, 4),
        "rank": rank,
        "known": rank == 1,
        "subject_positions": subject_positions(model, prompt, subject),
    }
