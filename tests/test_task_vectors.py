"""Tests of course_utils.task_vectors (lesson 05), its data and its checks."""

import json
import random

import pytest
import torch
from conftest import assert_lookup_fails_when_grading, stub

from course_utils import task_vectors as tv
from course_utils.checks import CheckFailed, grading_seed
from course_utils.checks import task_vectors as checks
from course_utils.predictions import answer_token_id

# ----------------------------------------------------------------------------- data


def test_tasks_cover_four_families_with_enough_pairs():
    tasks = tv.load_tasks()
    assert len(tasks) >= 10
    assert {t.family for t in tasks.values()} == set(tv.FAMILIES)
    for task in tasks.values():
        assert len(task.pairs) >= 30, task.name
        queries = [x for x, _ in task.pairs]
        assert len(set(queries)) == len(queries), f"{task.name}: duplicate queries"
    assert {"last_of_list", "to_upper", "antonyms", "country_capital", "en_fr", "en_es"} <= set(
        tasks
    )


def test_a_task_of_an_unknown_family_is_refused(tmp_path):
    bad = tmp_path / "tasks.json"
    entry = {"family": "poetry", "description": "rhymes", "pairs": [["cat", "hat"]]}
    bad.write_text(json.dumps({"tasks": {"rhyme": entry}}), encoding="utf-8")
    with pytest.raises(ValueError, match="family 'poetry' is not one of"):
        tv.load_tasks(bad)


def test_every_answer_is_one_token(model):
    for task in tv.load_tasks().values():
        assert tv.single_token_pairs(model, task.pairs) == list(task.pairs), task.name
        ids = tv.answer_targets(model, [y for _, y in task.pairs], task.name)
        assert ids.shape == (len(task.pairs),)
        # lesson 00's convention: the caller adds the leading space
        assert int(ids[0]) == answer_token_id(model, " " + task.pairs[0][1])


def test_multi_token_answer_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"' Stratford' is 2 tokens.*'Stratford' in task 'demo'"):
        tv.answer_targets(model, ["Paris", "Stratford"], task="demo")


def test_split_holds_queries_out():
    task = tv.load_task("antonyms")
    train, dev, test = task.split(10, 20, seed=3)
    assert len(test) == 20 and len(dev) == 10 and len(train) == len(task.pairs) - 30
    queries = [{x for x, _ in part} for part in (train, dev, test)]
    assert not (queries[0] & queries[1] or queries[0] & queries[2] or queries[1] & queries[2])
    assert task.split(10, 20, seed=3) == (train, dev, test)
    with pytest.raises(ValueError, match="fewer than 6 remain"):
        task.split(10, len(task.pairs) - 12)
    for t in tv.load_tasks().values():  # the lesson's split fits every task
        assert len(t.split(10, 20)[0]) >= 10, t.name
    with pytest.raises(KeyError, match="available"):
        tv.load_task("no_such_task")


# ----------------------------------------------------------------------------- prompts


def test_prompt_format_and_empty_demonstrations():
    assert (
        tv.icl_prompt([("a b c", "c"), ("d e f", "f")], "g h i")
        == "a b c -> c\nd e f -> f\ng h i ->"
    )
    assert tv.zero_shot_prompt("hot") == "hot ->"
    with pytest.raises(ValueError, match="at least one demonstration"):
        tv.icl_prompt([], "hot")
    with pytest.raises(ValueError, match="at least one demonstration"):
        tv.sample_demonstrations([("a", "b")], 0, random.Random(0))


def test_task_vector_prompts_use_training_pairs_only():
    train, dev, test = tv.load_task("country_capital").split(10, 20)
    held_out = {x for x, _ in dev + test}
    for prompt in tv.task_vector_prompts(train, 6, n_demos=5, seed=1):
        lines = prompt.split("\n")
        assert len(lines) == 6 and lines[-1].endswith(" ->")
        words = {line.split(" ->")[0] for line in lines}
        assert not words & held_out
        assert lines[-1][: -len(" ->")] not in {line.split(" ->")[0] for line in lines[:-1]}


def test_right_padding_is_exact(model):
    prompts = ["a b c -> c\nd e f -> f\ng h i ->", "hot ->", "France -> Paris\nJapan ->"]
    tokens, last = tv.tokenize(model, prompts)
    assert tokens[:, 0].eq(model.tokenizer.bos_token_id).all()
    with torch.no_grad():
        batched = model(tokens)
        for i, prompt in enumerate(prompts):
            alone = model(model.to_tokens(prompt))[0, -1]
            torch.testing.assert_close(batched[i, last[i]], alone, atol=1e-3, rtol=0)


# ----------------------------------------------------------------------------- θ and patching


def test_extract_single_and_averaged(model):
    prompts = checks.ICL_PROMPTS
    both = tv.extract_task_vector(model, prompts, layers=[0, 12])
    assert both.shape == (2, model.cfg.d_model)
    singles = [tv.extract_task_vector(model, p, layers=[0, 12]) for p in prompts]
    torch.testing.assert_close(both, torch.stack(singles).mean(0), atol=1e-4, rtol=0)
    # layer 0 is the embedding of the last token (" ->" in both prompts): identical vectors
    torch.testing.assert_close(singles[0][0], singles[1][0])
    assert not torch.allclose(singles[0][1], singles[1][1])
    with pytest.raises(ValueError, match="at least one prompt"):
        tv.extract_task_vector(model, [], layers=[0])


def test_patch_hook_modes():
    resid = torch.zeros(2, 4, 3)
    vector = torch.ones(3)
    out = tv.make_patch_hook(2 * vector, torch.tensor([3, 1]), "replace")(resid)
    assert out[0, 3].tolist() == [2.0] * 3 and out[1, 1].tolist() == [2.0] * 3
    assert out.abs().sum() == 12 and resid.abs().sum() == 0  # the input is not modified
    added = tv.make_patch_hook(vector, torch.tensor([0, 0]), "add")(torch.ones(2, 4, 3))
    assert added[:, 0].eq(2).all() and added[:, 1:].eq(1).all()
    with pytest.raises(ValueError, match="mode"):
        tv.make_patch_hook(vector, torch.tensor([0]), "swap")


def test_patching_a_prompts_own_state_changes_nothing(model):
    prompts = ["hot ->", "France ->"]
    layer = 10
    plain = tv.predict(model, prompts)
    for i, prompt in enumerate(prompts):
        own = tv.extract_task_vector(model, prompt, layers=[layer])[0]
        assert tv.predict(model, [prompt], patch=(layer, own, "replace"))[0] == plain[i]
        zero = torch.zeros_like(own)
        assert tv.predict(model, [prompt], patch=(layer, zero, "add"))[0] == plain[i]


def test_shuffled_label_prompts_break_the_mapping():
    train, _, _ = tv.load_task("antonyms").split(10, 20)
    truth = dict(train)
    for prompt, answer in tv.shuffled_label_prompts(train, 5, n_demos=5, seed=4):
        lines = prompt.split("\n")
        pairs = [line.split(" -> ") for line in lines[:-1]]
        assert sum(truth[x] == y for x, y in pairs) < len(pairs)  # at least one label moved
        assert sorted(y for _, y in pairs) == sorted(truth[x] for x, _ in pairs)  # same labels
        assert truth[lines[-1][: -len(" ->")]] == answer


def test_wilson_interval_and_baselines():
    assert tv.wilson_interval(0, 20) == (0.0, pytest.approx(0.1611, abs=1e-4))
    low, high = tv.wilson_interval(10, 20)
    assert low == pytest.approx(0.2993, abs=1e-4) and high == pytest.approx(0.7007, abs=1e-4)
    assert tv.wilson_interval(20, 20)[1] == 1.0 and tv.wilson_interval(20, 20)[0] < 1.0
    assert tv.format_accuracy(0.5, 20) == "0.50 [0.30, 0.70]"
    with pytest.raises(ValueError):
        tv.wilson_interval(3, 2)
    assert tv.majority_baseline(["English", "Spanish", "English", "French"]) == 0.5
    assert tv.top_answer_share([5, 5, 5, 7]) == 0.75


def test_sweep_engine_matches_the_bridge(model):
    train, _, test = tv.load_task("to_upper").split(10, 20)
    layers = [4, 21]
    theta = tv.extract_task_vector(model, tv.task_vector_prompts(train, 3, 5, 2), layers)
    prompts = [tv.zero_shot_prompt(x) for x, _ in test[:5]]
    for mode in ("replace", "add"):
        swept = tv.sweep_predictions(model, prompts, theta, layers, mode)
        assert swept.shape == (5, 2)
        for i, layer in enumerate(layers):
            assert (
                swept[:, i].tolist() == tv.predict(model, prompts, (layer, theta[i], mode)).tolist()
            )


def test_head_effects_and_function_vector_match_bridge_patching(model):
    train, _, _ = tv.load_task("to_upper").split(10, 20)
    means = tv.head_means(model, tv.task_vector_prompts(train, 3, 5, 2))
    assert means.shape == (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_head)
    ((prompt, answer),) = tv.shuffled_label_prompts(train, 1, 5, 3)
    effects = tv.head_effects(model, [(prompt, answer)], means)
    tokens, target = model.to_tokens(prompt), answer_token_id(model, " " + answer)
    base = model(tokens)[0, -1].softmax(-1)[target]
    for layer, head in [tv.top_heads(effects, 1)[0], (3, 2)]:

        def hook(z, hook=None, head=head, layer=layer):
            z = z.clone()
            z[0, -1, head] = means[layer, head]
            return z

        patched = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)])
        truth = patched[0, -1].softmax(-1)[target] - base
        assert float(effects[layer, head]) == pytest.approx(float(truth), abs=1e-4)
    heads = [(3, 2), (20, 5)]
    fv = tv.function_vector(model, means, heads)
    torch.testing.assert_close(fv, means[3, 2] @ model.W_O[3, 2] + means[20, 5] @ model.W_O[20, 5])
    assert tv.top_heads(torch.tensor([[0.0, 2.0], [3.0, 1.0]]), 2) == [(1, 0), (0, 1)]


def test_evaluate_task_small(model):
    task = tv.load_task("to_upper")
    result = tv.evaluate_task(
        model, task, layers=[3, 21], n_dev=4, n_test=6, n_theta=2, progress=False
    )
    assert result.layers == [3, 21] and result.n_test == 6 and result.n_dev == 4
    assert result.theta.shape == (2, model.cfg.d_model)
    for method in ("replace", "add"):
        assert len(result.dev[method]) == len(result.test[method]) == 2
        assert len(result.test_predictions[method]) == 6
        assert result.layer(method) in (3, 21)
    # the accuracy at a layer is the same number the check's independent HF computation gives
    train, _, test = task.split(4, 6, 0)
    theta = tv.extract_task_vector(model, tv.task_vector_prompts(train, 2, 5, 2), layers=[21])[0]
    torch.testing.assert_close(result.theta[1], theta)
    truth = checks.patched_accuracy_truth(
        model, [x for x, _ in test], [y for _, y in test], theta, 21
    )
    assert result.test["replace"][1] == pytest.approx(truth)
    # "add" subtracts the training queries' mean zero-shot state, never a test query's
    zero_state = tv.extract_task_vector(model, [tv.zero_shot_prompt(x) for x, _ in train], [21])[0]
    added = tv.accuracy(
        model,
        [tv.zero_shot_prompt(x) for x, _ in test],
        [y for _, y in test],
        patch=(21, theta - zero_state, "add"),
    )
    assert result.test["add"][1] == pytest.approx(added)
    assert "theta" not in result.to_dict()


def test_result_chooses_on_dev_and_reports_test():
    result = tv.TaskVectorResult(
        "t",
        "algorithmic",
        30,
        10,
        20,
        0.0,
        0.8,
        0.3,
        [3, 6, 9],
        {"replace": [0.2, 0.7, 0.7]},
        {"replace": [0.9, 0.5, 0.6]},
        {"replace": [1] * 15 + [2] * 5},
        {"n_demos": 5},
    )
    assert result.layer() == 6 and result.accuracy() == 0.5  # not the test maximum 0.9
    assert result.baseline == 0.3 and result.top_answer_share() == 0.75
    assert result.interval() == tv.wilson_interval(10, 20)
    import matplotlib

    matplotlib.use("Agg")
    fig = tv.plot_accuracy_by_layer([result, result])
    assert len(fig.axes) == 2
    with pytest.raises(ValueError):
        tv.plot_accuracy_by_layer([])


def test_shipped_results_follow_the_protocol():
    data = tv.load_results()
    results = data["results"]
    assert set(results) == set(tv.load_tasks())
    for r in results.values():
        assert r.layers == list(range(r.n_layers))  # every layer, not every second one
        assert set(r.dev) == set(tv.METHODS)
        for method in tv.METHODS:
            best_dev = max(r.dev[method])
            assert r.dev[method][r.layers.index(r.layer(method))] == best_dev
            predictions = r.test_predictions[method]
            assert len(predictions) == r.n_test
    fv = data["function_vector"]
    assert len(fv["heads"]) == 10 and len(fv["effects"]) == 30


# ----------------------------------------------- checks: pass on a right answer, fail on wrong ones


def _task_vector_right(model, prompts, layer):
    return tv.extract_task_vector(model, prompts, layers=[layer])[0]


def _accuracy_right(model, queries, answers, theta, layer):
    return tv.accuracy(
        model, [tv.zero_shot_prompt(q) for q in queries], answers, patch=(layer, theta, "replace")
    )


def test_check_task_vector(model):
    checks.check_task_vector(_task_vector_right, model)
    checks.check_task_vector(_task_vector_right, model, hidden=True)
    wrong = {
        "stub": stub,
        "state leaving the block": lambda m, p, layer: tv.extract_task_vector(
            m, p, layers=[layer + 1]
        )[0],
        "first prompt only": lambda m, p, layer: tv.extract_task_vector(m, p[:1], layers=[layer])[
            0
        ],
        "sum, not mean": lambda m, p, layer: (
            tv.extract_task_vector(m, p, layers=[layer])[0] * len(p)
        ),
        "batch dim kept": lambda m, p, layer: tv.extract_task_vector(m, p, layers=[layer]),
    }
    for _name, fn in wrong.items():
        with pytest.raises(CheckFailed):
            checks.check_task_vector(fn, model)


def test_check_patch_hook(model):
    checks.check_patch_hook(tv.make_patch_hook, model)
    checks.check_patch_hook(tv.make_patch_hook, model, hidden=True)

    def every_position(vector, positions, mode="replace"):
        def hook(resid, hook=None):
            resid = resid.clone()
            resid[:] = vector if mode == "replace" else resid + vector
            return resid

        return hook

    def always_replace(vector, positions, mode="replace"):
        return tv.make_patch_hook(vector, positions, "replace")

    def last_position(vector, positions, mode="replace"):
        def hook(resid, hook=None):
            resid = resid.clone()
            resid[:, -1] = vector if mode == "replace" else resid[:, -1] + vector
            return resid

        return hook

    for fn in (stub, every_position, always_replace, last_position, lambda v, p, mode: None):
        with pytest.raises(CheckFailed):
            checks.check_patch_hook(fn, model)


def test_hidden_checks_pass_on_the_reference_under_grading_seeds(model):
    for seed in (1, 2):  # drawn prompts, layers, seeds, queries and θ prompts
        with grading_seed(seed):
            checks.check_task_vector(_task_vector_right, model, hidden=True)
            checks.check_patch_hook(tv.make_patch_hook, model, hidden=True)
            checks.check_task_vector_accuracy(_accuracy_right, model, hidden=True)


def test_a_lookup_table_of_the_written_inputs_fails_the_hidden_check_at_grading(model):
    """task_vector answered from a table of the reference's vectors for the prompts and layers the
    check writes (recorded by running it once in a notebook): enough there, not while grading."""
    table = {}

    def recording(model, prompts, layer):
        table[tuple(prompts), layer] = _task_vector_right(model, prompts, layer)
        return table[tuple(prompts), layer]

    def lookup(model, prompts, layer):
        return table.get((tuple(prompts), layer), torch.zeros(model.cfg.d_model))

    checks.check_task_vector(recording, model)
    checks.check_task_vector(recording, model, hidden=True)
    assert_lookup_fails_when_grading(checks.check_task_vector, lookup, model)


def test_check_task_vector_accuracy(model):
    checks.check_task_vector_accuracy(_accuracy_right, model)
    checks.check_task_vector_accuracy(_accuracy_right, model, hidden=True)

    def zero_shot_only(model, queries, answers, theta, layer):
        return tv.accuracy(model, [tv.zero_shot_prompt(q) for q in queries], answers)

    def added(model, queries, answers, theta, layer):
        return tv.accuracy(
            model, [tv.zero_shot_prompt(q) for q in queries], answers, patch=(layer, theta, "add")
        )

    def no_space(model, queries, answers, theta, layer):
        return _accuracy_right(model, queries, [a.lower() for a in answers], theta, layer)

    for fn in (stub, zero_shot_only, added, no_space, lambda *a: 1.0):
        with pytest.raises(CheckFailed):
            checks.check_task_vector_accuracy(fn, model)
