"""Tests for course_utils/scaling.py (lesson 07): nnsight experiments equal TransformerLens, the
remote="local" path equals the local one, skeleton scans report the real models' shapes, and the
NDIF cell skips (or fails readably) instead of hanging."""

import socket
import time

import pytest
import torch
from conftest import assert_lookup_fails_when_grading, stub

from course_utils import scaling as sc
from course_utils.checks import CheckFailed, grading_seed
from course_utils.checks import scaling as checks
from course_utils.predictions import answer_token_id
from course_utils.residual_stream import logit_lens as tl_logit_lens
from course_utils.task_vectors import last_token_resid, zero_shot_prompt

CLEAN = "The Eiffel Tower is located in the city of"
CORRUPTED = "The Colosseum is located in the city of"
ATOL = 1e-4


@pytest.fixture(scope="module")
def nn_model():
    torch.set_grad_enabled(False)
    return sc.load_nnsight_model("cpu")


@pytest.fixture(scope="module")
def prompts(nn_model):
    tok = nn_model.tokenizer
    return (
        sc.to_tokens(tok, CLEAN),
        sc.to_tokens(tok, CORRUPTED),
        answer_token_id(tok, " Paris"),
        answer_token_id(tok, " Rome"),
    )


def test_to_tokens_matches_the_bridge_and_puts_bos_first(nn_model, model):
    for prompt in [CLEAN, "2 + 2 ="]:
        assert torch.equal(sc.to_tokens(nn_model.tokenizer, prompt), model.to_tokens(prompt).cpu())
    assert sc.to_tokens(nn_model.tokenizer, CLEAN)[
        0, 0
    ] == nn_model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    with pytest.raises(TypeError, match="string"):
        sc.to_tokens(nn_model.tokenizer, ["a"])


def test_every_row_of_the_mapping_table_reads_the_same_tensor(nn_model, model, prompts):
    clean, layer = prompts[0], 7
    names = {
        tl.replace("{L}", str(layer)).split(" ")[0]: path.replace("[L]", f"[{layer}]")
        for tl, path in sc.TL_TO_NNSIGHT
    }
    assert len(names) == len(sc.TL_TO_NNSIGHT) == 9
    m = nn_model
    with m.trace(clean):  # in the order the model computes them
        got = list().save()
        for path in names.values():
            got.append(eval(path, {"model": m}).save())
    logits, cache = model.run_with_cache(clean)
    for (tl_name, path), value in zip(names.items(), got, strict=False):
        want = logits if tl_name == "logits" else cache[tl_name]
        want = want.flatten(-2) if tl_name.endswith("hook_z") else want
        error = ((value - want).abs().max() / want.abs().max()).item()
        assert error < 1e-5, f"{tl_name} vs {path}: relative error {error:.1e}"


def test_logit_lens_equals_transformer_lens(nn_model, model, prompts):
    clean = prompts[0]
    _, cache = model.run_with_cache(clean)
    for pos in (-1, 3):
        got = sc.logit_lens(nn_model, clean, pos)
        want = tl_logit_lens(model, cache, pos)[:, 0]
        assert got.shape == (model.cfg.n_layers + 1, model.cfg.d_vocab)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-5)
    # the final row is the model's own output, to the same tolerance on the logits' log-softmax
    torch.testing.assert_close(got[-1], model(clean)[0, 3].log_softmax(-1), atol=ATOL, rtol=1e-5)


def test_patching_sweep_equals_transformer_lens_hooks(nn_model, model, prompts):
    clean, corrupted, paris, rome = prompts
    positions, layers = [3, 4, 10], [0, 7, 15, 29]
    result = sc.patching_sweep(
        nn_model, clean, corrupted, paris, rome, positions, layers=layers, layers_per_trace=3
    )
    assert result.logit_diff.shape == (len(layers), len(positions))
    for row, layer in enumerate(layers):
        want = checks._tl_patched_diff(model, clean, corrupted, layer, positions, paris, rome)
        torch.testing.assert_close(result.logit_diff[row], want, atol=ATOL, rtol=0)
    logits = model(torch.cat([clean, corrupted]))[:, -1]
    assert abs(result.clean - float(logits[0, paris] - logits[0, rome])) < ATOL
    assert abs(result.corrupted - float(logits[1, paris] - logits[1, rome])) < ATOL
    # patching the last position after the last layer hands over the clean answer completely
    assert abs(float(result.restored[-1, -1]) - 1.0) < 1e-4
    # one layer per trace (patch_layer) gives the same numbers as the batched sweep
    torch.testing.assert_close(
        sc.patch_layer(nn_model, clean, corrupted, 7, positions, paris, rome),
        result.logit_diff[1],
        atol=1e-5,
        rtol=0,
    )


def test_task_vector_and_patched_predictions_equal_transformer_lens(nn_model, model):
    icl = ["hot -> cold\nbig -> small\nup -> down\nfast ->", "wet -> dry\nold -> new\nhigh ->"]
    layer = 6
    theta = sc.task_vector(nn_model, icl, layer)
    want = last_token_resid(model, icl, [layer])[:, 0].mean(0)
    torch.testing.assert_close(theta, want, atol=ATOL, rtol=0)
    queries = ["good", "light"]
    top = sc.patched_predictions(nn_model, queries, theta, layer)
    for query, got in zip(queries, top.tolist(), strict=False):
        tokens = model.to_tokens(zero_shot_prompt(query))

        def write(resid, hook):
            resid = resid.clone()
            resid[0, -1] = theta
            return resid

        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", write)])
        assert got == int(logits[0, -1].argmax())


def test_remote_local_equals_local(nn_model, prompts):
    clean, corrupted, paris, rome = prompts
    lens = sc.logit_lens(nn_model, clean)
    assert torch.equal(sc.logit_lens(nn_model, clean, remote="local"), lens)
    kwargs = dict(positions=[4, 10], layers=[2, 20])
    local = sc.patching_sweep(nn_model, clean, corrupted, paris, rome, **kwargs)
    shipped = sc.patching_sweep(nn_model, clean, corrupted, paris, rome, remote="local", **kwargs)
    assert torch.equal(local.logit_diff, shipped.logit_diff)
    theta = sc.task_vector(nn_model, ["a -> A\nb -> B\nc ->"], 5)
    assert torch.equal(sc.task_vector(nn_model, ["a -> A\nb -> B\nc ->"], 5, remote="local"), theta)


@pytest.mark.parametrize(
    "size, n_layers, d_model, n_params",
    [
        ("8B", 32, 4096, 8_030_261_248),
        ("70B", 80, 8192, 70_553_706_496),
        ("405B", 126, 16384, 405_853_388_800),
    ],
)
def test_skeleton_scans_report_the_real_shapes(nn_model, size, n_layers, d_model, n_params):
    tokens = sc.to_tokens(nn_model.tokenizer, CLEAN)
    skeleton = sc.skeleton(size, nn_model.tokenizer)
    assert (
        sum(p.numel() for p in skeleton.parameters())
        == n_params
        == sc.n_params(sc.skeleton_config(size))
    )
    assert next(skeleton.parameters()).device.type == "meta"
    experiments = (
        ["logit_lens", "patching", "task_vector"] if size == "8B" else ["logit_lens", "patching"]
    )
    reports = {
        e: sc.scan_experiment(size, e, nn_model.tokenizer, tokens, model=skeleton)
        for e in experiments
    }
    assert reports["logit_lens"].shapes == {"log_probs": (n_layers + 1, 128256)}
    assert reports["logit_lens"].saved_bytes == (n_layers + 1) * 128256 * 4
    assert reports["patching"].shapes["logit_diff"] == (2, 2)
    assert reports["patching"].shapes["full sweep"] == (n_layers, 2)
    if "task_vector" in reports:
        assert reports["task_vector"].shapes == {"theta": (d_model,), "top-1": (1,)}
    assert reports["logit_lens"].resid_bytes == n_layers * tokens.shape[1] * d_model * 2
    assert reports["logit_lens"].weight_bytes == 2 * n_params


def test_unknown_skeleton_and_experiment_are_named(nn_model):
    with pytest.raises(KeyError, match="8B, 70B, 405B"):
        sc.skeleton_config("7B")
    with pytest.raises(ValueError, match="unknown experiment"):
        sc.scan_experiment("8B", "lens", nn_model.tokenizer, torch.zeros(1, 3, dtype=torch.long))


@pytest.fixture
def no_credentials(monkeypatch):
    from nnsight import CONFIG

    for name in ("NDIF_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    monkeypatch.setattr(sc, "_hf_token", lambda: None)


def test_remote_cell_skips_without_a_key_and_contacts_nothing(no_credentials, monkeypatch):
    def contacted(*args, **kwargs):
        raise AssertionError("NDIF was contacted without a key")

    monkeypatch.setattr(sc, "_model_running", contacted)
    ready, line = sc.ndif_readiness("meta-llama/Llama-3.1-405B")
    assert not ready and line.count("\n") == 0
    assert "NDIF_API_KEY" in line and "HF_TOKEN" in line and "pilot" in line


def _unused_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_unreachable_ndif_gives_a_readable_answer_not_a_hang(no_credentials, monkeypatch, nn_model):
    import nnsight.modeling.huggingface as nnsight_hf
    from nnsight import CONFIG

    host = f"http://127.0.0.1:{_unused_local_port()}"  # nothing listens there
    monkeypatch.setenv("NDIF_API_KEY", "test-key-not-real")
    monkeypatch.setattr(sc, "_hf_token", lambda: "hf-test-token")
    monkeypatch.setattr(CONFIG.API, "HOST", host)
    start = time.perf_counter()
    ready, line = sc.ndif_readiness("meta-llama/Llama-3.1-8B", timeout=20)
    assert not ready and line.startswith("Skipped the NDIF run") and line.count("\n") == 0
    assert time.perf_counter() - start < 25
    # the experiment itself, sent there: the hub lookup of the repo id is answered from nnsight's
    # cache, so the only network call is the connection that is refused
    skeleton = sc.skeleton("8B", nn_model.tokenizer)
    monkeypatch.setitem(nnsight_hf._ID_CACHE, skeleton.repo_id, "meta-llama/Llama-3.1-8B")
    start = time.perf_counter()
    with pytest.raises(sc.NDIFUnavailable, match="127.0.0.1"):
        tokens = sc.to_tokens(nn_model.tokenizer, CLEAN)
        sc.patching_sweep(skeleton, tokens, tokens, 0, 1, [1], layers=[0], remote=host)
    assert time.perf_counter() - start < 30


def test_checks_fail_on_stubs(nn_model, model):
    for check in (checks.check_logit_lens, checks.check_patch_layer):
        with pytest.raises(CheckFailed):
            check(stub, nn_model, model)
    with pytest.raises(CheckFailed):
        checks.check_to_tokens(stub, model, nn_model.tokenizer)


def test_checks_catch_a_missing_bos_and_a_missing_final_norm(nn_model, model, capsys):
    with pytest.raises(CheckFailed):
        checks.check_to_tokens(
            lambda tok, p: torch.tensor([tok.encode(p, add_special_tokens=False)]),
            model,
            nn_model.tokenizer,
        )
    assert "<|endoftext|>" in capsys.readouterr().out

    def without_norm(m, tokens, pos):
        lens = sc.logit_lens(m, tokens, pos)
        _, cache = model.run_with_cache(tokens)
        resid = [cache[f"blocks.{L}.hook_resid_post"][0, pos] for L in range(model.cfg.n_layers)]
        raw = torch.stack([(r @ model.W_U).log_softmax(-1) for r in resid])
        return torch.cat([lens[:1], raw])

    with pytest.raises(CheckFailed):
        checks.check_logit_lens(without_norm, nn_model, model)
    assert "final norm" in capsys.readouterr().out


# --- hidden tests draw their inputs while grading -------------------------------------------------


def test_hidden_checks_pass_on_the_reference_under_grading_seeds(nn_model, model):
    for seed in (1, 2):  # drawn prompts, positions, fact pairs and layers
        with grading_seed(seed):
            checks.check_to_tokens(sc.to_tokens, model, nn_model.tokenizer, hidden=True)
            checks.check_logit_lens(sc.logit_lens, nn_model, model, hidden=True)
            checks.check_patch_layer(sc.patch_layer, nn_model, model, hidden=True)


def test_a_lookup_table_of_the_written_inputs_fails_the_hidden_check_at_grading(nn_model, model):
    """to_tokens answered from a table of ids for the prompts written in the check: enough in a
    notebook, not while grading."""
    table = {p: sc.to_tokens(nn_model.tokenizer, p) for p in checks.PROMPTS + checks.HIDDEN_PROMPTS}

    def lookup(tokenizer, prompt):
        return table.get(prompt, torch.zeros(1, 3, dtype=torch.long))

    assert_lookup_fails_when_grading(checks.check_to_tokens, lookup, model, nn_model.tokenizer)
