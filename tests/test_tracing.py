"""Tests of course_utils/tracing.py and course_utils/checks/tracing.py (lesson 04)."""

import json

import pytest
import torch
from conftest import stub

from course_utils import tracing
from course_utils.checks import CheckFailed, grading_seed
from course_utils.checks import tracing as checks
from course_utils.facts import subject_token_span

# (prompt, subject, answer): different subject spans and lengths
FACTS = [
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris"),
    ("The capital of Japan is", "Japan", " Tokyo"),
    ("The Colosseum is located in the city of", "The Colosseum", " Rome"),
]
SAMPLES = 3  # equality does not depend on the sample count; few samples keep the reference cheap


@pytest.fixture(scope="module")
def scale(model):
    return 3 * tracing.subject_embedding_std(model, [subject for _, subject, _ in FACTS])


@pytest.mark.slow
@pytest.mark.parametrize("kind", tracing.KINDS)
@pytest.mark.parametrize("fact", FACTS, ids=lambda fact: fact[1])
def test_fast_equals_reference(model, scale, fact, kind):
    prompt, subject, answer = fact
    start, stop = subject_token_span(model, prompt, subject)
    n_pos = model.to_tokens(prompt).shape[1]
    layers = [0, 4, 17, 29]  # the window clips at both ends; hidden at 29 restores the final state
    positions = sorted({0, start, stop - 1, min(stop, n_pos - 1), n_pos - 1})
    kwargs = dict(
        samples=SAMPLES,
        noise_scale=scale,
        seed=3,
        layers=layers,
        positions=positions,
        foil=" London",
    )
    fast = tracing.trace(model, prompt, subject, answer, kind, progress=False, **kwargs)
    reference = tracing.trace_reference(model, prompt, subject, answer, kind, **kwargs)
    assert abs(fast.clean_prob - reference.clean_prob) <= 1e-5
    assert abs(fast.corrupted_prob - reference.corrupted_prob) <= 1e-5
    picked = fast.scores[layers][:, positions]
    assert not torch.isnan(picked).any()
    assert (picked - reference.scores[layers][:, positions]).abs().max() <= 1e-5
    for metric in ("log_prob", "logit_diff"):  # logits of order 10: float32 rounding ~1e-5 relative
        assert abs(fast.corrupted[metric] - reference.corrupted[metric]) <= 1e-4
        got, want = fast.metric_scores(metric), reference.metric_scores(metric)
        assert (got[layers][:, positions] - want[layers][:, positions]).abs().max() <= 1e-4
    assert torch.isnan(fast.scores[1]).all()  # untraced layers stay NaN
    # ROME's two sites: hidden states and MLP outputs at the last subject token bring back some of
    # the answer; attention there does almost nothing (lesson 04 measures 0.02), its site is the
    # last token.
    site = n_pos - 1 if kind == "attn" else stop - 1
    assert fast.scores[layers, site].max() > fast.corrupted_prob


@pytest.mark.parametrize("kind", tracing.KINDS)
def test_fast_full_rows_equal_reference_cells(model, scale, kind):
    """All 30 layers of a token in one growing batch (cells share rows while their restores agree,
    e.g. the MLP/attention windows clipped at layer 0; hidden restores at the first subject token
    move it into the cached prefix): spot-check against ROME's loop, including the clipped windows
    0..5 and layer 6."""
    prompt, subject, answer = FACTS[
        1
    ]  # "Japan": one subject token, so the first and last subject token
    start, stop = subject_token_span(model, prompt, subject)
    last = model.to_tokens(prompt).shape[1] - 1
    kwargs = dict(samples=2, noise_scale=scale, seed=0, positions=[start, last])
    fast = tracing.trace(model, prompt, subject, answer, kind, progress=False, **kwargs)
    layers = [0, 3, 5, 6, 28, 29]
    reference = tracing.trace_reference(
        model, prompt, subject, answer, kind, layers=layers, **kwargs
    )
    picked = [start, last]
    assert (
        fast.scores[layers][:, picked] - reference.scores[layers][:, picked]
    ).abs().max() <= 1e-5


def test_trace_result_and_plot(model, scale):
    import matplotlib

    matplotlib.use("Agg")
    prompt, subject, answer = FACTS[1]
    n_pos = model.to_tokens(prompt).shape[1]
    result = tracing.trace(
        model,
        prompt,
        subject,
        answer,
        "hidden",
        samples=2,
        noise_scale=scale,
        positions=[n_pos - 1],
        progress=False,
    )
    assert result.scores.shape == (model.cfg.n_layers, n_pos)
    assert result.tokens[0] == "<|endoftext|>" and len(result.tokens) == n_pos
    assert result.clean_prob > result.corrupted_prob
    # restoring the final state at the last position is the clean run itself
    assert abs(float(result.scores[-1, -1]) - result.clean_prob) < 1e-5
    assert result.settings.kind == "hidden" and result.settings.samples == 2
    assert torch.allclose(
        result.indirect_effect[:, -1], result.scores[:, -1] - result.corrupted_prob
    )
    assert result.to_dict()["subject_span"] == result.subject_span
    figure = tracing.plot_trace(result)
    assert isinstance(figure, matplotlib.figure.Figure)


def test_restores_before_the_subject_change_nothing(model, scale):
    prompt, subject, answer = FACTS[1]  # "Japan" starts at position 4
    start, _ = subject_token_span(model, prompt, subject)
    assert start == 4
    result = tracing.trace_reference(
        model,
        prompt,
        subject,
        answer,
        "hidden",
        samples=2,
        noise_scale=scale,
        layers=[0, 15],
        positions=[1, start - 1],
    )
    assert (result.scores[[0, 15]][:, [1, start - 1]] - result.corrupted_prob).abs().max() < 1e-6


def test_default_noise_is_romes_rule_over_the_shipped_facts(model):
    from course_utils.facts import load_facts

    prompt, subject, answer = FACTS[1]
    expected = 3 * tracing.subject_embedding_std(model, [fact["subject"] for fact in load_facts()])
    assert tracing.rome_noise_scale(model) == pytest.approx(expected)
    assert 0.3 < expected < 0.4
    n_pos = model.to_tokens(prompt).shape[1]
    result = tracing.trace(
        model, prompt, subject, answer, samples=2, layers=[3], positions=[n_pos - 1], progress=False
    )
    assert result.settings.noise_scale == pytest.approx(expected)


def test_explicit_noise_reproduces_the_drawn_noise_and_is_validated(model, scale):
    prompt, subject, answer = FACTS[1]  # one subject token
    n_pos = model.to_tokens(prompt).shape[1]
    kwargs = dict(layers=[2, 20], positions=[n_pos - 2, n_pos - 1], progress=False)
    drawn = tracing.trace(
        model, prompt, subject, answer, samples=3, noise_scale=scale, seed=5, **kwargs
    )
    noise = tracing.make_noise(3, 1, model.cfg.d_model, scale, seed=5)
    given = tracing.trace(model, prompt, subject, answer, noise=noise, **kwargs)
    assert torch.equal(torch.nan_to_num(given.scores), torch.nan_to_num(drawn.scores))
    assert (
        given.settings.samples == 3
        and given.settings.noise_scale is None
        and given.settings.seed is None
    )
    with pytest.raises(ValueError, match="not both"):
        tracing.trace(model, prompt, subject, answer, noise=noise, noise_scale=scale, **kwargs)
    with pytest.raises(ValueError, match=r"\[sample, 1, 576\]"):
        tracing.trace(
            model, prompt, subject, answer, noise=torch.zeros(3, 2, model.cfg.d_model), **kwargs
        )


def test_effect_metrics(model, scale):
    prompt, subject, answer = FACTS[1]
    n_pos = model.to_tokens(prompt).shape[1]
    result = tracing.trace(
        model,
        prompt,
        subject,
        answer,
        samples=2,
        noise_scale=scale,
        foil=" Kyoto",
        layers=[29],
        positions=[n_pos - 1],
        progress=False,
    )
    # restoring the final state at the last position is the clean run, in every metric
    for metric in tracing.METRICS:
        assert abs(float(result.metric_scores(metric)[29, -1]) - result.clean[metric]) < 1e-4
        assert torch.allclose(
            result.effect(metric),
            result.metric_scores(metric) - result.corrupted[metric],
            equal_nan=True,
        )
    assert result.clean["log_prob"] == pytest.approx(
        torch.tensor(result.clean_prob).log().item(), abs=1e-5
    )
    no_foil = tracing.trace(
        model,
        prompt,
        subject,
        answer,
        samples=2,
        noise_scale=scale,
        layers=[29],
        positions=[n_pos - 1],
        progress=False,
    )
    with pytest.raises(ValueError, match="foil"):
        no_foil.effect("logit_diff")
    with pytest.raises(ValueError, match="metric"):
        no_foil.effect("p")


def test_window_layers():
    assert tracing.window_layers(0, 30, "mlp") == [0, 1, 2, 3, 4]
    assert tracing.window_layers(10, 30, "attn") == list(range(5, 15))
    assert tracing.window_layers(29, 30, "mlp") == list(range(24, 30))
    assert tracing.window_layers(10, 30, "mlp", window=3) == [9, 10, 11]
    assert tracing.window_layers(7, 30, "hidden") == [7]


def test_make_noise_is_seeded():
    a = tracing.make_noise(3, 2, 8, 0.5, seed=1)
    assert a.shape == (3, 2, 8)
    assert torch.equal(a, tracing.make_noise(3, 2, 8, 0.5, seed=1))
    assert not torch.equal(a, tracing.make_noise(3, 2, 8, 0.5, seed=2))
    assert 0.2 < float(a.std()) < 0.8


def test_clear_errors(model):
    prompt, subject, answer = FACTS[0]
    with pytest.raises(ValueError, match="does not occur"):
        tracing.trace(model, prompt, "Big Ben", answer, progress=False)
    with pytest.raises(ValueError, match="not one"):
        tracing.trace(model, prompt, subject, " Parisian suburbs", progress=False)
    with pytest.raises(ValueError, match="out of range"):
        tracing.trace(model, prompt, subject, answer, layers=[30], progress=False)
    with pytest.raises(ValueError, match="out of range"):
        tracing.trace_reference(model, prompt, subject, answer, layers=[-1])
    with pytest.raises(ValueError, match="kind"):
        tracing.trace(model, prompt, subject, answer, kind="resid", progress=False)
    with pytest.raises(ValueError, match="position"):
        tracing.trace(model, prompt, subject, answer, positions=[99], progress=False)


def test_attribution_patching_shape_and_zero_before_subject(model, scale):
    prompt, subject, answer = FACTS[1]
    start, _ = subject_token_span(model, prompt, subject)
    estimate = tracing.attribution_patching(
        model, prompt, subject, answer, samples=2, noise_scale=scale
    )
    assert estimate.shape == (model.cfg.n_layers, model.to_tokens(prompt).shape[1])
    # clean and corrupted states are equal there; only batch-size-dependent float rounding (~1e-9
    # with 2 threads) remains, against effects of order 1e-2 at the subject
    assert estimate[:, :start].abs().max() <= 1e-6
    assert estimate[:, start:].abs().max() > 1e-3


@pytest.mark.parametrize("metric", ["prob", "log_prob", "logit_diff"])
def test_attribution_patching_averages_samples_once(model, scale, metric):
    """Two copies of the same noise sample must give the one-sample estimate: the estimate is a mean
    over samples of each sample's own first-order change (dividing by the sample count twice
    fails)."""
    prompt, subject, answer = FACTS[1]
    one = tracing.make_noise(1, 1, model.cfg.d_model, scale, seed=1)
    kwargs = dict(metric=metric, foil=" Kyoto")
    single = tracing.attribution_patching(model, prompt, subject, answer, noise=one, **kwargs)
    double = tracing.attribution_patching(
        model, prompt, subject, answer, noise=one.repeat(2, 1, 1), **kwargs
    )
    assert (single - double).abs().max() <= 1e-4 * single.abs().max()
    assert single.abs().max() > 1e-3


def test_attribution_patching_of_the_final_state_is_first_order_exact_for_logit_diff(model, scale):
    """The logit difference is linear in the final residual up to the final RMSNorm, so the estimate
    of restoring the last position's final state is close to the exact effect (a check of the
    gradient's scale)."""
    prompt, subject, answer = FACTS[1]
    n_pos = model.to_tokens(prompt).shape[1]
    kwargs = dict(samples=2, noise_scale=scale, seed=0, foil=" Kyoto")
    estimate = tracing.attribution_patching(
        model, prompt, subject, answer, metric="logit_diff", **kwargs
    )
    exact = tracing.trace(
        model, prompt, subject, answer, layers=[29], positions=[n_pos - 1], progress=False, **kwargs
    ).effect("logit_diff")
    assert float(exact[29, -1]) != 0
    assert 0.5 < float(estimate[29, -1]) / float(exact[29, -1]) < 2


def test_attribution_patching_needs_a_foil_for_logit_diff(model):
    prompt, subject, answer = FACTS[1]
    with pytest.raises(ValueError, match="foil"):
        tracing.attribution_patching(model, prompt, subject, answer, metric="logit_diff")
    with pytest.raises(ValueError, match="metric"):
        tracing.attribution_patching(model, prompt, subject, answer, metric="p")


def test_lesson_04_quiz_bank_is_built_from_its_spec():
    from course_utils.quizzes import SPEC_DIR, load_quiz, main

    assert main(["check", str(SPEC_DIR / "04_causal_tracing.json")]) == 0
    quiz = load_quiz("04_causal_tracing")
    spec = json.loads((SPEC_DIR / "04_causal_tracing.json").read_text())
    for question in spec["questions"]:
        assert quiz.evaluate(question["id"], question["answer"]).passed
        wrong = next(key for key in question["options"] if key != question["answer"])
        assert not quiz.evaluate(question["id"], wrong).passed


# ---- checks: each must fail on the stub and on a plausible mistake -------------------------------


def _good_noise_hook(span, scale, seed):
    def hook(embed, hook=None):
        noise = tracing.make_noise(embed.shape[0], span[1] - span[0], embed.shape[2], scale, seed)
        out = embed.clone()
        out[:, span[0] : span[1]] += noise
        return out

    return hook


def _unseeded_noise_hook(span, scale, seed):
    def hook(embed, hook=None):
        out = embed.clone()
        out[:, span[0] : span[1]] += scale * torch.randn_like(out[:, span[0] : span[1]])
        return out

    return hook


def _good_restore_hook(clean_act, position):
    def hook(act, hook=None):
        out = act.clone()
        out[:, position] = clean_act[position]
        return out

    return hook


def _in_place_restore_hook(clean_act, position):
    def hook(act, hook=None):
        act[:, position] = clean_act[position]
        return act

    return hook


def test_noise_and_restore_checks_pass_on_correct_code(model):
    checks.check_subject_noise_hook(_good_noise_hook, model)
    checks.check_subject_noise_hook(_good_noise_hook, model, hidden=True)
    checks.check_restore_hook(_good_restore_hook, model)
    checks.check_restore_hook(_good_restore_hook, model, hidden=True)


@pytest.mark.parametrize(
    "wrong",
    [
        stub,
        _unseeded_noise_hook,
        lambda span, scale, seed: _good_noise_hook(span, 2 * scale, seed),
    ],
)
def test_noise_check_fails_on_wrong_code(model, wrong):
    with pytest.raises(CheckFailed):
        checks.check_subject_noise_hook(wrong, model)


@pytest.mark.parametrize(
    "wrong",
    [
        stub,
        _in_place_restore_hook,
        lambda clean, position: _good_restore_hook(clean, position + 1),
    ],
)
def test_restore_check_fails_on_wrong_code(model, wrong):
    with pytest.raises(CheckFailed):
        checks.check_restore_hook(wrong, model)


def _cell_without_restore(
    model, tokens, answer_id, noise_hook, clean_cache, kind, layer, position, samples=10
):
    """A plausible mistake: forgets the restore hook, so every cell is the corrupted baseline."""
    logits = model.run_with_hooks(
        tokens.expand(samples, -1), fwd_hooks=[("hook_embed", noise_hook)]
    )
    return float(logits[:, -1].softmax(-1)[:, answer_id].mean())


def test_trace_cell_check_fails_on_wrong_code(model):
    for wrong in (stub, _cell_without_restore, lambda *args, **kwargs: 0.5):
        with pytest.raises(CheckFailed):
            checks.check_trace_cell(wrong, model)


def test_row_and_heatmap_checks_fail_on_wrong_code(model):
    n_layers = model.cfg.n_layers
    for wrong in (
        stub,
        lambda *args, **kwargs: torch.zeros(n_layers),
        lambda *args, **kwargs: torch.zeros(n_layers - 1),
    ):
        with pytest.raises(CheckFailed):
            checks.check_trace_row(wrong, model)
    n_pos = model.to_tokens(checks.SHORT_FACT[0]).shape[1]  # the heatmap check uses a short prompt
    for wrong in (
        stub,
        lambda *args, **kwargs: torch.zeros(2, n_pos),
        lambda *args, **kwargs: torch.zeros(2, n_pos + 5),
        lambda *args, **kwargs: [[0.0] * n_pos] * 2,
    ):
        with pytest.raises(CheckFailed):
            checks.check_trace_heatmap(wrong, model)


def test_trace_all_kinds_shares_runs_but_equals_single_traces(model, scale):
    prompt, subject, answer = FACTS[1]
    last = model.to_tokens(prompt).shape[1] - 1
    kwargs = dict(
        samples=2, noise_scale=scale, seed=4, layers=[2, 20], positions=[last], progress=False
    )
    together = tracing.trace_all_kinds(model, prompt, subject, answer, **kwargs)
    assert list(together) == list(tracing.KINDS)
    for kind, result in together.items():
        alone = tracing.trace(model, prompt, subject, answer, kind, **kwargs)
        assert result.settings == alone.settings and result.settings.kind == kind
        assert torch.equal(torch.nan_to_num(result.scores), torch.nan_to_num(alone.scores))
        assert result.corrupted_prob == alone.corrupted_prob


# --- hidden tests draw their inputs while grading -------------------------------------------------


@pytest.fixture(scope="module")
def lesson04(solution_functions):
    """The functions lesson 04's learner writes, from solutions/04_causal_tracing.ipynb."""
    return solution_functions(
        "04_causal_tracing",
        {
            "torch": torch,
            "HOOK_OF_KIND": tracing.HOOK_OF_KIND,
            "window_layers": tracing.window_layers,
        },
    )


HIDDEN_CHECKS = [
    (checks.check_subject_noise_hook, "make_subject_noise_hook"),
    (checks.check_restore_hook, "make_restore_hook"),
    (checks.check_trace_cell, "trace_cell"),
    (checks.check_trace_row, "trace_row"),
    (checks.check_trace_heatmap, "trace_heatmap"),
]


@pytest.mark.parametrize("check, name", HIDDEN_CHECKS, ids=[n for _, n in HIDDEN_CHECKS])
def test_hidden_checks_pass_on_the_solution_under_grading_seeds(model, lesson04, check, name):
    for seed in (1, 2):  # drawn facts, noise seeds, spans, kinds, layers and positions
        with grading_seed(seed):
            check(lesson04[name], model, hidden=True)


def test_a_lookup_table_of_the_written_cells_fails_the_hidden_check_at_grading(model, lesson04):
    """trace_cell answered from a table of the solution's values for the cells the check writes
    (recorded by running it once in a notebook): enough there, not while grading."""
    table = {}

    def key(tokens, kind, layer, position):
        return tuple(tokens[0].tolist()), kind, layer, position

    def recording(model, tokens, answer_id, noise_hook, cache, kind, layer, position, samples):
        value = lesson04["trace_cell"](
            model, tokens, answer_id, noise_hook, cache, kind, layer, position, samples
        )
        table[key(tokens, kind, layer, position)] = value
        return value

    def lookup(model, tokens, answer_id, noise_hook, cache, kind, layer, position, samples):
        return table.get(key(tokens, kind, layer, position), 0.0)

    checks.check_trace_cell(recording, model)
    checks.check_trace_cell(recording, model, hidden=True)
    checks.check_trace_cell(lookup, model, hidden=True)
    with grading_seed(1), pytest.raises(CheckFailed):  # the honest code passes: test above
        checks.check_trace_cell(lookup, model, hidden=True)


def test_signature_help_lists_the_trace_options():
    """trace/trace_all_kinds/trace_reference forward **options; their signatures show them."""
    import inspect

    for fn in (tracing.trace, tracing.trace_all_kinds, tracing.trace_reference):
        params = inspect.signature(fn).parameters
        assert {"samples", "noise_scale", "seed", "foil", "window", "layers", "progress"} <= set(
            params
        ), fn.__name__
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert inspect.signature(tracing.trace_reference).parameters["progress"].default is False
