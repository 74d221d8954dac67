"""Tests of course_utils/facts.py and the shipped facts dataset (lesson 03)."""

import importlib.util
from pathlib import Path

import pytest

from course_utils.facts import (
    FACT_KEYS,
    facts_file,
    get_fact,
    load_facts,
    measure_fact,
    subject_positions,
    subject_token_span,
)

ROOT = Path(__file__).resolve().parent.parent
# a spread of relations, probabilities and one unknown fact; measuring all 102 takes minutes on a
# busy CPU
SAMPLE_IDS = [
    "eiffel_tower_city",
    "cn_tower_city",
    "forbidden_city_city",
    "south_korea_capital",
    "mexico_language",
    "roger_federer_sport",
]


def _verify_script():
    spec = importlib.util.spec_from_file_location(
        "verify_facts", ROOT / "scripts" / "verify_facts.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dataset_shape_and_consistency():
    document = facts_file()
    every, known = load_facts(include_unknown=True), load_facts()
    assert len(known) >= 40
    assert document["n_known"] == len(known) and document["n_candidates"] == len(every)
    assert len({fact["id"] for fact in every}) == len(every), "fact ids must be unique"
    for fact in every:
        assert set(fact) == set(FACT_KEYS), fact["id"]
        assert fact["prompt"] == fact["relation"].format(fact["subject"])
        assert fact["known"] == (fact["rank"] == 1)
        assert 0.0 <= fact["p_answer"] <= 1.0
    assert all(fact["known"] for fact in known)
    assert not get_fact("cn_tower_city")["known"]


def test_subject_span_matches_shipped_and_spells_subject(model):
    for fact in load_facts(include_unknown=True):
        positions = subject_positions(model, fact["prompt"], fact["subject"])
        assert positions == fact["subject_positions"], fact["id"]
        assert positions == list(range(positions[0], positions[-1] + 1)), (
            "a subject span is contiguous"
        )
        assert positions[0] >= 1, "position 0 is the BOS, never part of a subject"
        spelled = "".join(model.to_str_tokens(fact["prompt"])[p] for p in positions).strip()
        assert spelled == fact["subject"], (fact["id"], spelled)


def test_subject_positions_examples_and_errors(model):
    assert subject_positions(model, "The capital of Japan is", "Japan") == [4]
    assert subject_positions(model, "The CN Tower is located in the city of", "The CN Tower") == [
        1,
        2,
        3,
    ]
    with pytest.raises(ValueError, match="does not occur"):
        subject_positions(model, "The capital of Japan is", "Tokyo")
    with pytest.raises(ValueError, match="does not occur"):
        subject_positions(model, "The capital of Japan is", "japan")  # case-sensitive
    with pytest.raises(ValueError):
        subject_positions(model, "The capital of Japan is", "  ")


def test_subject_token_span_is_the_positions_as_a_range(model):
    prompt, subject = "The CN Tower is located in the city of", "The CN Tower"
    start, stop = subject_token_span(model, prompt, subject)
    assert (start, stop) == (1, 4)
    assert list(range(start, stop)) == subject_positions(model, prompt, subject)
    assert subject_token_span(model, "The capital of Japan is", "Japan") == (4, 5)
    with pytest.raises(ValueError, match="does not occur"):
        subject_token_span(model, "The capital of Japan is", "Tokyo")


def test_get_fact_unknown_id_names_close_ids():
    with pytest.raises(KeyError, match="eiffel_tower_city"):
        get_fact("eifel_tower_city")


def test_shipped_numbers_reproduce_on_a_sample(model):
    script = _verify_script()
    shipped = [get_fact(fact_id) for fact_id in SAMPLE_IDS]
    measured = script.measure_all(model, shipped)
    assert script.compare(shipped, measured) == []
    # the comparison can fail: a wrong shipped number is reported
    tampered = [dict(fact) for fact in shipped]
    tampered[0]["p_answer"] = round(tampered[0]["p_answer"] + 0.05, 4)
    tampered[1]["rank"] = 1
    problems = script.compare(tampered, measured)
    assert len(problems) == 2 and "p_answer" in problems[0] and "rank" in problems[1]


def test_measure_fact_rejects_bad_relation_and_multi_token_answer(model):
    with pytest.raises(ValueError, match="exactly one"):
        measure_fact(model, "Japan", "The capital of Japan is", " Tokyo")
    with pytest.raises(ValueError, match="tokens"):
        measure_fact(model, "Turkey", "The capital of {} is", " Ankara")


def test_dumps_round_trips():
    import json

    script = _verify_script()
    document = facts_file()
    assert json.loads(script.dumps(document)) == document
    assert (ROOT / "course_utils" / "data" / "facts.json").read_text() == script.dumps(document)
