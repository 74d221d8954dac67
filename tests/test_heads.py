"""Tests of course_utils.heads (lesson 06) and of its checks: each check fails on the stub and on
the typical mistakes it names (wrong head axis, no final-norm scale, wrong patch position...)."""

import matplotlib
import pytest
import torch
from conftest import assert_lookup_fails_when_grading, stub

from course_utils import heads
from course_utils.checks import CheckFailed, grading_seed
from course_utils.checks import heads as checks
from course_utils.predictions import answer_token_id

matplotlib.use("Agg")

PROMPT, CORRUPTED = checks.PROMPT, checks.CORRUPTED


@pytest.fixture(scope="module")
def ids(model):
    return answer_token_id(model, " Paris"), answer_token_id(model, " Rome")


# --- reference solutions (what the lesson's solution cells do) and typical mistakes -------------


def per_head_dla(
    model, cache, answer_id, foil_id, *, scale=True, gain=True, foil=True, transpose=False
):
    z = torch.stack(
        [cache[f"blocks.{layer}.attn.hook_z"][0, -1] for layer in range(model.cfg.n_layers)]
    )
    outputs = torch.einsum("lhd,lhdm->lhm", z, model.W_O)
    if scale:
        outputs = outputs / cache["ln_final.hook_scale"][0, -1]
    column = model.W_U[:, answer_id] - (model.W_U[:, foil_id] if foil else 0)
    result = outputs @ ((model.ln_final.w if gain else 1) * column)
    return result.T if transpose else result


def patch_heads(
    model, base_tokens, source_z, layer, answer_id, foil_id, *, where="last", axis_ok=True
):
    n = model.cfg.n_heads
    rows = torch.arange(n)

    def hook(z, hook=None):
        z = z.clone()
        if not axis_ok:  # patches position h instead of head h
            z[rows, rows] = source_z[0, rows]
        elif where == "last":
            z[rows, -1, rows] = source_z[0, -1]
        elif where == "all":
            z[rows, :, rows] = source_z[0].transpose(0, 1)
        else:  # position 0
            z[rows, 0, rows] = source_z[0, 0]
        return z

    logits = model.run_with_hooks(
        base_tokens.expand(n, -1), fwd_hooks=[(f"blocks.{layer}.attn.hook_z", hook)]
    )
    return heads.logit_diff(logits, answer_id, foil_id)


def ov_logits(model, layer, head, x, final_scale, *, scale=True, gqa="interleave"):
    kv = head // 3 if gqa == "interleave" else head % 3
    written = x @ model.W_V[layer, kv] @ model.W_O[layer, head]
    if scale:
        written = written / final_scale
    return (written * model.ln_final.w) @ model.W_U


def composition_score(left, right, *, norm="fro", normalise=True, swap=False):
    product = right @ left if swap else left @ right
    top = torch.linalg.matrix_norm(product, ord=norm)
    if not normalise:
        return float(top)
    return float(
        top / (torch.linalg.matrix_norm(left, ord=norm) * torch.linalg.matrix_norm(right, ord=norm))
    )


def bos_attention(patterns, *, include_first=False, transpose=False):
    if transpose:
        return patterns[:, :, 0, 1:].mean(-1)
    return patterns[:, :, (0 if include_first else 1) :, 0].mean(-1)


# --- helpers ------------------------------------------------------------------------------------


def test_logit_diff_and_top_heads():
    logits = torch.zeros(2, 3, 5)
    logits[:, -1, 1], logits[:, -1, 4] = 2.0, 0.5
    assert heads.logit_diff(logits, 1, 4).tolist() == [1.5, 1.5]
    with pytest.raises(ValueError):
        heads.logit_diff(logits[0], 1, 4)
    values = torch.tensor([[0.1, -3.0], [2.0, 0.0]])
    assert heads.top_heads(values, 2) == [(0, 1, -3.0), (1, 0, 2.0)]
    assert heads.top_heads(values, 1, by_abs=False) == [(1, 0, 2.0)]
    assert heads.head_label(23, 4) == "L23H4"
    with pytest.raises(ValueError):
        heads.top_heads(values[0], 1)


def test_plots_return_figures():
    fig = heads.plot_head_grid(torch.randn(30, 9), "t")
    assert fig.axes and fig.axes[0].images[0].get_clim()[0] == -fig.axes[0].images[0].get_clim()[1]
    fig = heads.plot_attention_rows(torch.rand(2, 3), ["a", "b", "c"], ["x", "y"])
    assert fig.axes
    with pytest.raises(ValueError):
        heads.plot_attention_rows(torch.rand(2, 4), ["a", "b", "c"], ["x", "y"])


def test_ov_and_qk_matrices_match_the_forward_pass(model):
    tokens = model.to_tokens(PROMPT)
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens,
            names_filter=lambda n: (
                n.startswith("blocks.23.")
                and n.endswith(
                    (
                        "hook_resid_pre",
                        "ln1.hook_scale",
                        "hook_z",
                        "hook_pattern",
                        "hook_q",
                        "hook_k",
                    )
                )
            ),
        )
    resid = cache["blocks.23.hook_resid_pre"][0]
    normed = (
        resid / cache["blocks.23.ln1.hook_scale"][0]
    )  # before the gain, which ov_matrix folds in
    z = cache["blocks.23.attn.hook_z"][0]  # pos n_heads d_head
    pattern = cache["blocks.23.attn.hook_pattern"][0]
    for head in (0, 4, 8):
        written = pattern[head] @ (normed @ heads.ov_matrix(model, 23, head))  # pos d_model
        torch.testing.assert_close(written, z[:, head] @ model.W_O[23, head], atol=1e-3, rtol=1e-4)
        unrotated = (
            cache["blocks.23.attn.hook_q"][0, :, head]
            @ cache["blocks.23.attn.hook_k"][0, :, head // 3].T
        )
        torch.testing.assert_close(
            normed @ heads.qk_matrix(model, 23, head) @ normed.T, unrotated, atol=1e-2, rtol=1e-4
        )
    assert heads.kv_head(model, 5) == 1


def test_head_patching_matches_bridge_hooks_and_rejects_bad_input(model, ids):
    clean, corrupted = model.to_tokens(PROMPT), model.to_tokens(CORRUPTED)
    fast = heads.head_patching(model, corrupted, clean, *ids, layers=[23])
    assert torch.isnan(fast[0]).all() and not torch.isnan(fast[23]).any()
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_z"))
        slow = patch_heads(model, corrupted, cache["blocks.23.attn.hook_z"], 23, *ids)
    torch.testing.assert_close(fast[23], slow, atol=2e-3, rtol=1e-4)
    assert float(fast[23].max() - fast[23].min()) > 1.0  # the patch does something
    with pytest.raises(ValueError):
        heads.head_patching(model, corrupted[:, :-1], clean, *ids)
    with pytest.raises(ValueError):
        heads.head_patching(model, corrupted, clean, *ids, layers=[30])


# --- checks: pass on the solution, fail on the stub and on each typical mistake ------------------


def test_per_head_dla_check(model):
    checks.check_per_head_dla(per_head_dla, model)
    checks.check_per_head_dla(per_head_dla, model, hidden=True)
    mistakes = [
        stub,
        lambda *a: per_head_dla(*a, scale=False),
        lambda *a: per_head_dla(*a, gain=False),
        lambda *a: per_head_dla(*a, foil=False),
        lambda *a: per_head_dla(*a, transpose=True),
    ]
    for wrong in mistakes:
        with pytest.raises(CheckFailed):
            checks.check_per_head_dla(wrong, model)


def attention_row(cache, layer, head, q=-1, *, mistake=None):
    pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # n_heads query key
    if mistake == "column":  # attention *to* the query position
        return pattern[head, :, q]
    if mistake == "head_axis":
        return pattern[:, q, head]
    return pattern[head, q]


def test_attention_row_check(model):
    checks.check_attention_row(attention_row, model)
    checks.check_attention_row(attention_row, model, hidden=True)
    mistakes = [
        stub,
        lambda *a: attention_row(*a, mistake="column"),
        lambda *a: attention_row(*a, mistake="head_axis"),
    ]
    for wrong in mistakes:
        with pytest.raises(CheckFailed):
            checks.check_attention_row(wrong, model)


def test_patch_heads_check(model):
    checks.check_patch_heads(patch_heads, model)
    mistakes = [
        stub,
        lambda *a: patch_heads(*a, where="all"),
        lambda *a: patch_heads(*a, where="first"),
        lambda *a: patch_heads(*a, axis_ok=False),
    ]
    for wrong in mistakes:
        with pytest.raises(CheckFailed):
            checks.check_patch_heads(wrong, model)


def test_ov_logits_check(model):
    checks.check_ov_logits(ov_logits, model)
    checks.check_ov_logits(ov_logits, model, hidden=True)
    for wrong in (
        stub,
        lambda *a: ov_logits(*a, scale=False),
        lambda *a: ov_logits(*a, gqa="tile"),
    ):
        with pytest.raises(CheckFailed):
            checks.check_ov_logits(wrong, model)


def test_composition_score_check():
    checks.check_composition_score(composition_score)
    checks.check_composition_score(composition_score, hidden=True)
    mistakes = [
        stub,
        lambda a, b: composition_score(a, b, norm=2),
        lambda a, b: composition_score(a, b, normalise=False),
        lambda a, b: composition_score(a, b, swap=True),
    ]
    for wrong in mistakes:
        with pytest.raises(CheckFailed):
            checks.check_composition_score(wrong)


def test_bos_attention_check(model):
    checks.check_bos_attention(bos_attention, model)
    checks.check_bos_attention(bos_attention, model, hidden=True)
    mistakes = [
        stub,
        lambda p: bos_attention(p, include_first=True),
        lambda p: bos_attention(p, transpose=True),
    ]
    for wrong in mistakes:
        with pytest.raises(CheckFailed):
            checks.check_bos_attention(wrong, model)


# --- hidden tests draw their inputs while grading -------------------------------------------------


def test_hidden_checks_pass_on_the_solution_under_grading_seeds(model):
    for seed in (1, 2):  # drawn facts, foils, prompts, layers, heads, positions and matrices
        with grading_seed(seed):
            checks.check_per_head_dla(per_head_dla, model, hidden=True)
            checks.check_attention_row(attention_row, model, hidden=True)
            checks.check_patch_heads(patch_heads, model, hidden=True)
            checks.check_ov_logits(ov_logits, model, hidden=True)
            checks.check_composition_score(composition_score, hidden=True)
            checks.check_bos_attention(bos_attention, model, hidden=True)


def test_a_lookup_table_of_the_written_inputs_fails_the_hidden_check_at_grading(model):
    """attention_row answered from a table of the solution's rows for the prompts, heads and
    positions the check writes (recorded by running it once in a notebook): enough there, not
    while grading."""
    table = {}

    def key(cache, layer, head, q):
        return tuple(cache["hook_embed"].shape), float(cache["hook_embed"].sum()), layer, head, q

    def recording(cache, layer, head, q):
        table[key(cache, layer, head, q)] = attention_row(cache, layer, head, q)
        return table[key(cache, layer, head, q)]

    def lookup(cache, layer, head, q):
        return table.get(key(cache, layer, head, q), torch.zeros(cache["hook_embed"].shape[1]))

    checks.check_attention_row(recording, model)
    checks.check_attention_row(recording, model, hidden=True)
    assert_lookup_fails_when_grading(checks.check_attention_row, lookup, model)
