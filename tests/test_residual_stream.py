"""Tests of course_utils.residual_stream (lesson 01) and of its checks."""

import matplotlib
import pytest
import torch
from conftest import assert_lookup_fails_when_grading, stub

from course_utils import residual_stream as rs
from course_utils.checks import CheckFailed, grading_seed
from course_utils.checks import residual_stream as checks
from course_utils.predictions import answer_rank, answer_token_id

matplotlib.use("Agg")

PROMPT = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def run(model):
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


# --- helpers ------------------------------------------------------------------------------------


def test_embed_is_hook_embed(model, run):
    tokens, _, cache = run
    assert torch.equal(rs.embed(model, tokens), cache["hook_embed"])


def test_attention_z_groups_consecutive_query_heads():
    pattern = torch.ones(1, 9, 1, 1)  # every query head reads the one key position fully
    v = torch.arange(3.0).view(1, 1, 3, 1)  # KV heads 0, 1, 2
    assert rs.attention_z(pattern, v).flatten().tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_exported_functions_are_the_solution_cells():
    from course_utils.from_solutions import residual_stream as generated

    for name in generated.__all__:
        assert getattr(rs, name) is getattr(generated, name)


def test_heads_sum_to_attn_out(model, run):
    _, _, cache = run
    for layer in (0, 29):
        z = rs.attention_z(
            cache[f"blocks.{layer}.attn.hook_pattern"], cache[f"blocks.{layer}.attn.hook_v"]
        )
        torch.testing.assert_close(z, cache[f"blocks.{layer}.attn.hook_z"], atol=1e-5, rtol=1e-5)
        heads = rs.head_outputs(model, z, layer)
        assert heads.shape == (1, 11, model.cfg.n_heads, model.cfg.d_model)
        torch.testing.assert_close(
            heads.sum(2), cache[f"blocks.{layer}.hook_attn_out"], atol=1e-4, rtol=1e-5
        )


def test_block_forward_and_forward_from_parts(model, run):
    tokens, logits, cache = run
    rotary = rs.position_embeddings(model, tokens)
    with torch.no_grad():
        mid, post = rs.block_forward(model.blocks[5], cache["blocks.5.hook_resid_pre"], rotary)
    torch.testing.assert_close(mid, cache["blocks.5.hook_resid_mid"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(post, cache["blocks.5.hook_resid_post"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(rs.forward_from_parts(model, tokens), logits, atol=1e-3, rtol=1e-5)


def test_decomposition_sums_and_dla_adds_up_to_logit(model, run):
    _, logits, cache = run
    components, labels = rs.decompose_resid(cache, model.cfg.n_layers)
    assert labels[:3] == ["embed", "attn_0", "mlp_0"] and len(labels) == 2 * model.cfg.n_layers + 1
    torch.testing.assert_close(
        components.sum(0), cache["blocks.29.hook_resid_post"], atol=1e-2, rtol=1e-6
    )
    paris = answer_token_id(model, " Paris")
    dla = rs.direct_logit_attribution(model, components, cache["ln_final.hook_scale"], paris)
    assert dla.shape == components.shape[:-1]
    torch.testing.assert_close(
        dla.sum(0) + model.b_U[paris], logits[..., paris], atol=1e-3, rtol=1e-4
    )


def test_logit_lens_last_row_is_model_output(model, run):
    _, logits, cache = run
    lens = rs.logit_lens(model, cache)
    assert lens.shape == (model.cfg.n_layers + 1, 1, model.cfg.d_vocab)
    torch.testing.assert_close(lens[-1], logits[:, -1].log_softmax(-1), atol=1e-4, rtol=1e-5)
    paris = answer_token_id(model, " Paris")
    ranks = answer_rank(lens[:, 0], paris)
    assert ranks[-1] == 1 and ranks[0] > 1


def test_plots_return_figures(model, run):
    from matplotlib.figure import Figure

    _, _, cache = run
    components, labels = rs.decompose_resid(cache, model.cfg.n_layers)
    dla = rs.direct_logit_attribution(model, components, cache["ln_final.hook_scale"], 7042)[
        :, 0, -1
    ]
    assert isinstance(rs.plot_direct_logit_attribution(dla, labels), Figure)
    with pytest.raises(ValueError):
        rs.plot_direct_logit_attribution(dla[:-1], labels)
    lens = rs.logit_lens(model, cache)[:, 0]
    tops = [model.tokenizer.decode([int(i)]) for i in lens.argmax(-1)]
    assert isinstance(
        rs.plot_logit_lens(lens[:, 7042].exp(), tops, " Paris", lens.max(-1).values.exp()), Figure
    )
    assert isinstance(rs.plot_stream_norms(torch.arange(5.0), torch.ones(5)), Figure)
    assert isinstance(rs.logit_lens_explorer(lens, model.tokenizer, static=True), Figure)


def test_explorer_falls_back_to_a_figure_without_ipywidgets(model, run, monkeypatch):
    import sys

    from matplotlib.figure import Figure

    monkeypatch.setitem(
        sys.modules, "ipywidgets", None
    )  # makes `import ipywidgets` raise ImportError
    _, _, cache = run
    assert isinstance(
        rs.logit_lens_explorer(rs.logit_lens(model, cache)[:, 0], model.tokenizer), Figure
    )


def test_explorer_is_a_widget_when_ipywidgets_is_installed(model, run):
    widgets = pytest.importorskip("ipywidgets")
    _, _, cache = run
    lens = rs.logit_lens(model, cache)[:, 0]
    explorer = rs.logit_lens_explorer(lens, model.tokenizer)
    assert isinstance(explorer, widgets.VBox)
    slider, table = explorer.children
    assert (
        slider.max == model.cfg.n_layers
        and "after 30 blocks" in table.value
        and "Paris" in table.value
    )
    slider.value = 0  # moving the slider rewrites the table
    assert "after 0 blocks" in table.value and "Paris" not in table.value


# --- checks pass on the reference and fail on wrong code ------------------------------------------


def _zero_last(activation, hook):
    activation = activation.clone()
    activation[:, -1] = 0
    return activation


def _logit_diff_dla(
    model, tokens, answer_id, foil_id, zeroed=None, scale_from_clean=False, zero_all_positions=False
):
    """A reference for exercise 01.9 built from the library's decompose_resid and DLA; the keyword
    arguments make the typical mistakes the check must catch."""

    def zero_all(activation, hook):
        return torch.zeros_like(activation)

    hooks = [] if zeroed is None else [(zeroed, zero_all if zero_all_positions else _zero_last)]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(tokens)
    components, _ = rs.decompose_resid(cache, model.cfg.n_layers)
    scale = cache["ln_final.hook_scale"]
    if scale_from_clean:
        with torch.no_grad():
            scale = model.run_with_cache(tokens)[1]["ln_final.hook_scale"]
    answer = rs.direct_logit_attribution(model, components, scale, answer_id)
    return (answer - rs.direct_logit_attribution(model, components, scale, foil_id))[:, 0, -1]


REFERENCE = [
    (checks.check_embed, rs.embed),
    (checks.check_attention_z, rs.attention_z),
    (checks.check_head_outputs, rs.head_outputs),
    (checks.check_block_forward, rs.block_forward),
    (checks.check_forward_from_parts, rs.forward_from_parts),
    (checks.check_decompose_resid, rs.decompose_resid),
    (checks.check_direct_logit_attribution, rs.direct_logit_attribution),
    (checks.check_logit_lens, rs.logit_lens),
    (checks.check_logit_diff_dla, _logit_diff_dla),
]


@pytest.mark.parametrize("check, reference", REFERENCE, ids=[c.__name__ for c, _ in REFERENCE])
def test_check_passes_on_reference(model, check, reference):
    check(reference, model)
    check(reference, model, hidden=True)


@pytest.mark.parametrize("check, reference", REFERENCE, ids=[c.__name__ for c, _ in REFERENCE])
def test_hidden_check_passes_on_reference_under_grading_seeds(model, check, reference):
    for seed in (1, 2):  # drawn prompts, layers, positions, tokens and zeroed hooks
        with grading_seed(seed):
            check(reference, model, hidden=True)


def test_a_lookup_table_of_the_written_inputs_fails_the_hidden_check_at_grading(model):
    """The reference's embeddings for every prompt written in the checks, looked up by tokens:
    enough in a notebook, where the hidden test keeps its fixed prompts; not while grading."""
    prompts = checks.PROMPTS + checks.HIDDEN_PROMPTS
    table = {
        tuple(model.to_tokens(p)[0].tolist()): rs.embed(model, model.to_tokens(p)) for p in prompts
    }

    def lookup(model, tokens):
        return table.get(tuple(tokens[0].tolist()), next(iter(table.values())))

    assert_lookup_fails_when_grading(checks.check_embed, lookup, model)


@pytest.mark.parametrize("check", [c for c, _ in REFERENCE], ids=[c.__name__ for c, _ in REFERENCE])
def test_check_fails_on_stub(model, check):
    with pytest.raises(CheckFailed, match="not implemented"):
        check(stub, model)


def _tiled_attention_z(pattern, v):
    return torch.einsum(
        "bhqk,bkhd->bqhd", pattern, v.repeat(1, 1, pattern.shape[1] // v.shape[2], 1)
    )


def _block_post_norm(
    block, resid_pre, rotary
):  # the tutor's version: normalise the stream after each add
    attn_out, _ = block.attn(block.ln1(resid_pre), position_embeddings=rotary, attention_mask=None)
    resid_mid = block.ln2(resid_pre + attn_out)
    return resid_mid, block.ln2(resid_mid + block.mlp(resid_mid))


def _forward_via_model(model, tokens):
    return model(tokens)


def _forward_without_final_norm(model, tokens):
    resid = rs.embed(model, tokens)
    rotary = rs.position_embeddings(model, tokens)
    for block in model.blocks:
        _, resid = rs.block_forward(block, resid, rotary)
    return resid @ model.W_U + model.b_U


def _decompose_without_embed(cache, n_layers):
    components, labels = rs.decompose_resid(cache, n_layers)
    return components[1:], labels[1:]


def _decompose_mlp_first(cache, n_layers):
    components, labels = rs.decompose_resid(cache, n_layers)
    order = [0] + [i for layer in range(n_layers) for i in (2 * layer + 2, 2 * layer + 1)]
    return components[order], labels


def _dla_without_gain(model, components, scale, token_id):
    return (components / scale) @ model.W_U[:, token_id]


def _lens_probabilities(model, cache, pos=-1):
    return rs.logit_lens(model, cache, pos).exp()


def _lens_without_norm(model, cache, pos=-1):
    resid = rs.resid_stack(cache, model.cfg.n_layers)[:, :, pos]
    return (resid @ model.W_U + model.b_U).log_softmax(-1)


WRONG = [
    (checks.check_embed, lambda model, tokens: model.W_E[tokens][0], "batch"),
    (checks.check_embed, lambda model, tokens: model.W_U.T[tokens] * 2, "values differ"),
    (checks.check_attention_z, _tiled_attention_z, "tiled"),
    (
        checks.check_head_outputs,
        lambda model, z, layer: rs.head_outputs(model, z, layer).sum(2),
        "heads separate",
    ),
    (
        checks.check_head_outputs,
        lambda model, z, layer: rs.head_outputs(model, z, (layer + 1) % 30),
        "values differ",
    ),
    (checks.check_block_forward, _block_post_norm, "values differ"),
    (checks.check_forward_from_parts, _forward_via_model, "not model"),
    (checks.check_forward_from_parts, _forward_without_final_norm, "values differ"),
    (checks.check_decompose_resid, _decompose_without_embed, "labels"),
    (checks.check_decompose_resid, _decompose_mlp_first, "first 2 components"),
    (checks.check_direct_logit_attribution, _dla_without_gain, "values differ"),
    (checks.check_logit_lens, _lens_probabilities, "log-probabilities"),
    (checks.check_logit_lens, _lens_without_norm, "values differ"),
    (
        checks.check_logit_diff_dla,
        lambda *args: _logit_diff_dla(*args, scale_from_clean=True),
        "own ln_final",
    ),
    (
        checks.check_logit_diff_dla,
        lambda *args: _logit_diff_dla(*args, zero_all_positions=True),
        "last position",
    ),
    (
        checks.check_logit_diff_dla,
        lambda m, t, a, f, z: _logit_diff_dla(m, t, a, f, None),
        "last position",
    ),
]


@pytest.mark.parametrize(
    "check, wrong, message", WRONG, ids=[f"{c.__name__}-{m}" for c, _, m in WRONG]
)
def test_check_fails_on_wrong_code(model, check, wrong, message):
    with pytest.raises(CheckFailed, match=message):
        check(wrong, model)


# --- lesson 01's quiz ---------------------------------------------------------------------------


def test_quiz_bank_is_up_to_date_and_explains_every_option():
    import json

    from course_utils.quizzes import BANK_DIR, SPEC_DIR, build_bank, dumps, load_quiz

    spec = json.loads((SPEC_DIR / "01_residual_stream.json").read_text())
    assert (BANK_DIR / "01_residual_stream.json").read_text() == dumps(build_bank(spec)), (
        "run: python -m course_utils.quizzes build solutions/quizzes/01_residual_stream.json"
    )
    quiz = load_quiz("01_residual_stream")
    assert len(spec["questions"]) >= 2
    for question in spec["questions"]:
        assert set(question["explanations"]) == set(question["options"])
        assert quiz.evaluate(question["id"], question["answer"]).passed
        wrong = next(k for k in question["options"] if k != question["answer"])
        assert not quiz.evaluate(question["id"], wrong).passed


def test_tolerance_table_covers_every_check():
    names = {name[len("check_") :] for name in dir(checks) if name.startswith("check_")}
    assert names == set(checks.TOLERANCE)


def test_hand_written_rmsnorm_passes_01_5_and_the_lessons_later_comparison(model, run):
    """Issue: a learner's own RMSNorm differs from the model's in the sixth decimal; it passes check
    01.5, so the lesson must not fail it later with a bit-for-bit comparison."""
    tokens, logits, _ = run

    def forward_hand_rmsnorm(model, tokens):
        resid = rs.embed(model, tokens)
        rotary = rs.position_embeddings(model, tokens)
        for block in model.blocks:
            _, resid = rs.block_forward(block, resid, rotary)
        rms = (resid.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
        return resid / rms * model.ln_final.w @ model.W_U + model.b_U

    checks.check_forward_from_parts(forward_hand_rmsnorm, model)
    with torch.no_grad():
        got = forward_hand_rmsnorm(model, tokens)
    atol, rtol = checks.TOLERANCE["forward_from_parts"]
    assert torch.allclose(got, logits, atol=atol, rtol=rtol)
