"""Tests of course_utils.task_vectors (lesson 05), its data and its checks."""

import random

import pytest
import torch

from course_utils import task_vectors as tv
from course_utils.checks import CheckFailed
from course_utils.checks import task_vectors as checks

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


def test_every_answer_is_one_token(model):
    for task in tv.load_tasks().values():
        assert tv.single_token_pairs(model, task.pairs) == list(task.pairs), task.name
        assert tv.answer_ids(model, [y for _, y in task.pairs], task.name).shape == (
            len(task.pairs),
        )


def test_multi_token_answer_is_a_clear_error(model):
    with pytest.raises(ValueError, match=r"'Stratford' in task 'demo' is 2 tokens"):
        tv.answer_ids(model, ["Paris", "Stratford"], task="demo")


def test_split_holds_queries_out():
    task = tv.load_task("antonyms")
    train, test = task.split(20, seed=3)
    assert len(test) == 20 and len(train) == len(task.pairs) - 20
    assert not {x for x, _ in train} & {x for x, _ in test}
    assert task.split(20, seed=3) == (train, test)
    with pytest.raises(ValueError, match="n_test"):
        task.split(len(task.pairs))
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
    train, test = tv.load_task("country_capital").split(20)
    held_out = {x for x, _ in test}
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
    out = tv.make_patch_hook(vector, torch.tensor([3, 1]), "replace", scale=2.0)(resid)
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


def test_evaluate_task_small(model):
    task = tv.load_task("to_upper")
    result = tv.evaluate_task(model, task, layers=[3, 21], n_test=6, n_theta=2, progress=False)
    assert result.layers == [3, 21] and len(result.task_vector) == 2 and result.n_queries == 6
    for value in (result.zero_shot, result.icl, *result.task_vector):
        assert 0.0 <= value <= 1.0
    assert result.best_layer in (3, 21)
    assert result.to_dict()["best_accuracy"] == max(result.task_vector)
    # the accuracy at a layer is the same number the check's independent HF computation gives
    train, test = task.split(6, 0)
    theta = tv.extract_task_vector(model, tv.task_vector_prompts(train, 2, 5, 2), layers=[21])[0]
    truth = checks.patched_accuracy_truth(
        model, [x for x, _ in test], [y for _, y in test], theta, 21
    )
    assert result.task_vector[1] == pytest.approx(truth)


def test_result_best_layer_and_plot():
    result = tv.TaskVectorResult("t", "algorithmic", 30, 10, 0.0, 0.8, [3, 6, 9], [0.2, 0.7, 0.7])
    assert (
        result.best_layer == 6
        and result.best_accuracy == 0.7
        and result.best_fraction == pytest.approx(0.2)
    )
    assert tv.TaskVectorResult("t", "algorithmic", 30, 10, 0.0, 0.8, [], []).best_layer is None
    import matplotlib

    matplotlib.use("Agg")
    fig = tv.plot_accuracy_by_layer([result, result])
    assert len(fig.axes) == 2
    with pytest.raises(ValueError):
        tv.plot_accuracy_by_layer([])


# ----------------------------------------------------------------------------- checks: pass on a right answer, fail on wrong ones


def _task_vector_right(model, prompts, layer):
    return tv.extract_task_vector(model, prompts, layers=[layer])[0]


def _accuracy_right(model, queries, answers, theta, layer):
    return tv.accuracy(
        model, [tv.zero_shot_prompt(q) for q in queries], answers, patch=(layer, theta, "replace")
    )


def _stub(*args, **kwargs):
    raise NotImplementedError()


def test_check_task_vector(model):
    checks.check_task_vector(_task_vector_right, model)
    checks.check_task_vector(_task_vector_right, model, hidden=True)
    wrong = {
        "stub": _stub,
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
    for name, fn in wrong.items():
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

    for fn in (_stub, every_position, always_replace, last_position, lambda v, p, mode: None):
        with pytest.raises(CheckFailed):
            checks.check_patch_hook(fn, model)


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

    for fn in (_stub, zero_shot_only, added, no_space, lambda *a: 1.0):
        with pytest.raises(CheckFailed):
            checks.check_task_vector_accuracy(fn, model)
