"""In-context learning task vectors and function vectors (lesson 05).

Hendel, Geva & Globerson (2023), "In-Context Learning Creates Task Vectors": give a model a few
demonstrations ``x -> y`` and a query; at some layer L the residual state at the last token (the
arrow of the query) holds a summary of the task, θ. Write θ into a prompt that has *no*
demonstrations, ``query ->``, at the same layer and position, and the model does the task anyway.

Todd et al. (2024), "Function Vectors in Large Language Models": a few attention heads carry the
task; the sum of their mean outputs at the last token, *added* to the residual stream of a
zero-shot prompt at an early-middle layer, triggers it. ``head_effects`` measures each head's causal
indirect effect on prompts whose demonstrations have shuffled answers, ``function_vector`` sums the
chosen heads' mean outputs.

This module ships the task data (``course_utils/data/tasks.json``), builds the prompts, extracts θ
(averaged over several prompts with different demonstrations and dummy queries), patches vectors in
by replacement or addition, and measures accuracy per layer with a protocol that selects on dev
and reports on test (``evaluate_task``). The patching hook, ``make_patch_hook``, is lesson 05's
exercise 05.2: its only text is the lesson's solution cell (marked ``#| export task_vectors``),
imported here from the generated ``course_utils.from_solutions.task_vectors``.

Conventions: every prompt starts with the model's BOS (``<|endoftext|>``, added here); an answer
``y`` is scored as the single token ``answer_token_id(model, " " + y)`` (lesson 00's convention: the
caller adds the space); "layer L" means the residual stream *entering* block L, hook
``blocks.{L}.hook_resid_pre``, so L = 0 is the token embedding. Hendel et al. number the output of
block L instead, so their layer L is our L + 1.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from .from_solutions.task_vectors import make_patch_hook
from .predictions import answer_token_id

TASKS_PATH = Path(__file__).resolve().parent / "data" / "tasks.json"
# the full table, written by `scripts/measure_tasks.py --out` (every task, every layer)
RESULTS_PATH = Path(__file__).resolve().parent / "data" / "task_vector_results.json"
ARROW = " ->"
SEPARATOR = "\n"
FAMILIES = ("algorithmic", "linguistic", "knowledge", "translation")
METHODS = ("replace", "add", "function_vector")
# Hendel et al. 2023 (Table 1, Figure 3): their best layer lies at 0.3-0.46 of the depth (their
# layer index, the output of block L), and over 18 tasks the mean accuracy is 0.13 zero-shot,
# 0.74 with the task vector and 0.84 with ICL.
HENDEL_BEST_LAYER_FRACTION = (0.30, 0.46)
HENDEL_MEAN_ACCURACY = {"zero_shot": 0.13, "task_vector": 0.74, "icl": 0.84}

Pair = tuple[str, str]


def resid_hook_name(layer: int) -> str:
    """The hook holding the residual stream entering block ``layer``."""
    return f"blocks.{layer}.hook_resid_pre"


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96): ``(low, high)``.

    Unlike p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at p = 0 or 1:
    0 correct out of 20 gives (0.00, 0.16), not (0, 0).
    """
    if n < 1:
        raise ValueError(f"need at least one trial, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def format_accuracy(accuracy: float, n: int) -> str:
    """``0.85 [0.64, 0.95]``: an accuracy on ``n`` queries with its 95% Wilson interval."""
    low, high = wilson_interval(round(accuracy * n), n)
    return f"{accuracy:.2f} [{low:.2f}, {high:.2f}]"


# ---------------------------------------------------------------------------------------------
# Task data


@dataclass(frozen=True)
class Task:
    """One in-context learning task: a name, a family and its ``(query, answer)`` pairs."""

    name: str
    family: str
    description: str
    pairs: tuple[Pair, ...]

    def split(
        self, n_dev: int, n_test: int, seed: int = 0
    ) -> tuple[list[Pair], list[Pair], list[Pair]]:
        """``(train, dev, test)`` after one seeded shuffle.

        ``train`` supplies the demonstrations and the dummy queries that build θ; ``dev`` chooses
        the layer; ``test`` is reported. A dev or test query never appears in a prompt that built
        a vector, and the reported number is never the one the layer was chosen on.
        """
        if n_dev < 0 or n_test < 1 or len(self.pairs) - n_dev - n_test < 6:
            raise ValueError(
                f"task {self.name!r} has {len(self.pairs)} pairs; with n_dev={n_dev} and "
                f"n_test={n_test} fewer than 6 remain for demonstrations (5 and a dummy query)"
            )
        pairs = list(self.pairs)
        random.Random(seed).shuffle(pairs)
        test, dev = pairs[:n_test], pairs[n_test : n_test + n_dev]
        return pairs[n_test + n_dev :], dev, test


def load_tasks(path: str | Path = TASKS_PATH) -> dict[str, Task]:
    """All tasks in the data file, by name, in file order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    tasks = {}
    for name, entry in data["tasks"].items():
        if entry["family"] not in FAMILIES:
            raise ValueError(
                f"task {name!r} in {path}: family {entry['family']!r} is not one of {FAMILIES}"
            )
        pairs = tuple((str(x), str(y)) for x, y in entry["pairs"])
        tasks[name] = Task(name, entry["family"], entry["description"], pairs)
    return tasks


def load_task(name: str, path: str | Path = TASKS_PATH) -> Task:
    """One task by name, e.g. ``load_task("antonyms")``."""
    tasks = load_tasks(path)
    if name not in tasks:
        raise KeyError(f"no task {name!r}; available: {', '.join(tasks)}")
    return tasks[name]


def answer_targets(model, answers: Sequence[str], task: str = "") -> Int[Tensor, " batch"]:
    """``answer_token_id(model, " " + y)`` for each answer ``y`` (stored without its space).

    The single-token rule and its message are lesson 00's; this only names the task on failure.
    """
    ids = []
    for answer in answers:
        try:
            ids.append(answer_token_id(model, " " + answer))
        except ValueError as error:
            where = f" in task {task!r}" if task else ""
            raise ValueError(
                f"{error} (answer {answer!r}{where}: keep only pairs whose answer is "
                "one token; scripts/measure_tasks.py --check-only lists them)"
            ) from None
    return torch.tensor(ids, dtype=torch.long)


def single_token_pairs(model, pairs: Sequence[Pair]) -> list[Pair]:
    """The pairs whose answer is one token (with its leading space) under ``model``'s tokenizer."""
    return [
        (x, y)
        for x, y in pairs
        if len(model.tokenizer.encode(" " + y, add_special_tokens=False)) == 1
    ]


def majority_baseline(test_answers: Sequence[str]) -> float:
    """The best accuracy a constant answer reaches on ``test_answers``.

    A vector that makes the model give one answer to every query scores this much without doing the
    task. We take the best constant *on the test set*: an upper bound over all constant answers,
    so at least as harsh as the training majority.
    """
    if not test_answers:
        raise ValueError("no test answers")
    counts = Counter(test_answers)
    return max(counts.values()) / len(test_answers)


def top_answer_share(predictions: Sequence[int]) -> float:
    """The share of queries that receive the most common prediction (1.0: a constant answer)."""
    if len(predictions) == 0:
        raise ValueError("no predictions")
    return max(Counter(int(p) for p in predictions).values()) / len(predictions)


# ---------------------------------------------------------------------------------------------
# Prompts


def icl_prompt(demonstrations: Sequence[Pair], query: str) -> str:
    """Hendel et al.'s format: one ``x -> y`` line per demonstration, then ``query ->``.

    >>> icl_prompt([("a b c", "c"), ("d e f", "f")], "g h i")
    'a b c -> c\\nd e f -> f\\ng h i ->'
    """
    if len(demonstrations) == 0:
        raise ValueError(
            "an in-context prompt needs at least one demonstration (x, y); with none "
            "it is the zero-shot prompt: use zero_shot_prompt(query)"
        )
    lines = [f"{x}{ARROW} {y}" for x, y in demonstrations]
    return SEPARATOR.join([*lines, f"{query}{ARROW}"])


def zero_shot_prompt(query: str) -> str:
    """The prompt with no demonstrations: ``query ->``."""
    return f"{query}{ARROW}"


def sample_demonstrations(
    train: Sequence[Pair], n: int, rng: random.Random, exclude: str | None = None
) -> list[Pair]:
    """``n`` distinct demonstrations from ``train``, never one whose query is ``exclude``."""
    pool = [p for p in train if p[0] != exclude]
    if n < 1:
        raise ValueError(f"need at least one demonstration, got n={n}")
    if len(pool) < n:
        raise ValueError(f"cannot draw {n} demonstrations from {len(pool)} training pairs")
    return rng.sample(pool, n)


def task_vector_prompts(
    train: Sequence[Pair], n_prompts: int, n_demos: int = 5, seed: int = 0
) -> list[str]:
    """``n_prompts`` ICL prompts built from ``train`` only: ``n_demos`` demonstrations and a dummy
    query (another training pair's ``x``) each. Averaging θ over them removes what is specific to
    one query and keeps what the prompts share: the task."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n_prompts):
        dummy = rng.choice(train)
        demos = sample_demonstrations(train, n_demos, rng, exclude=dummy[0])
        prompts.append(icl_prompt(demos, dummy[0]))
    return prompts


def shuffled_label_prompts(
    train: Sequence[Pair], n_prompts: int, n_demos: int = 5, seed: int = 0
) -> list[tuple[str, str]]:
    """Todd et al.'s corrupted prompts: ``(prompt, answer)`` where the demonstrations' answers are
    permuted among themselves (the format survives, the mapping x -> y does not) and the query is
    another training pair whose true answer is returned."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_prompts):
        query, answer = rng.choice(train)
        demos = sample_demonstrations(train, n_demos, rng, exclude=query)
        labels = [y for _, y in demos]
        while n_demos > 1 and labels == [y for _, y in demos]:
            rng.shuffle(labels)
        out.append(
            (icl_prompt([(x, y) for (x, _), y in zip(demos, labels, strict=False)], query), answer)
        )
    return out


def tokenize(
    model, prompts: Sequence[str]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Right-padded tokens (BOS first) and the index of each prompt's last real token.

    Right padding is exact for a causal model: a position never attends to the padding after it,
    so the logits at ``last[i]`` are those of prompt ``i`` on its own.
    """
    if len(prompts) == 0:
        raise ValueError("no prompts to tokenize")
    bos = model.tokenizer.bos_token_id
    rows = [[bos, *model.tokenizer.encode(p, add_special_tokens=False)] for p in prompts]
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else bos
    tokens = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
    last = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
    return tokens.to(model.cfg.device), last.to(model.cfg.device)


# ---------------------------------------------------------------------------------------------
# Extracting and patching θ


@torch.no_grad()
def last_token_resid(
    model, prompts: Sequence[str], layers: Sequence[int]
) -> Float[Tensor, "batch layer d_model"]:
    """The residual stream entering each of ``layers`` at the last token of each prompt."""
    tokens, last = tokenize(model, prompts)
    names = [resid_hook_name(layer) for layer in layers]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    rows = torch.arange(len(prompts), device=tokens.device)
    return torch.stack([cache[name][rows, last] for name in names], dim=1)


def extract_task_vector(
    model, prompts: str | Sequence[str], layers: Sequence[int] | None = None, batch_size: int = 16
) -> Float[Tensor, "layer d_model"]:
    """θ for each layer: the last-token residual state, averaged over ``prompts``.

    One prompt gives Hendel et al.'s single θ; several (``task_vector_prompts``) give the averaged
    θ. ``layers`` defaults to every block ``0 .. n_layers - 1``.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise ValueError("need at least one prompt to extract a task vector from")
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    total = None
    for start in range(0, len(prompts), batch_size):
        part = last_token_resid(model, prompts[start : start + batch_size], layers).sum(dim=0)
        total = part if total is None else total + part
    return total / len(prompts)


@torch.no_grad()
def predict(
    model,
    prompts: Sequence[str],
    patch: tuple[int, Tensor, str] | None = None,
    batch_size: int = 32,
) -> Int[Tensor, " batch"]:
    """Greedy next token after each prompt; ``patch = (layer, vector, mode)`` writes ``vector`` at
    the last token entering ``layer`` first."""
    out = []
    for start in range(0, len(prompts), batch_size):
        tokens, last = tokenize(model, prompts[start : start + batch_size])
        if patch is None:
            logits = model(tokens)
        else:
            layer, vector, mode = patch
            hook = make_patch_hook(vector, last, mode)
            logits = model.run_with_hooks(tokens, fwd_hooks=[(resid_hook_name(layer), hook)])
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        out.append(logits[rows, last].argmax(dim=-1).cpu())
    return torch.cat(out)


def accuracy(
    model,
    prompts: Sequence[str],
    answers: Sequence[str],
    patch: tuple[int, Tensor, str] | None = None,
    batch_size: int = 32,
) -> float:
    """Fraction of prompts whose greedy next token is ``" " + answer``."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    targets = answer_targets(model, answers)
    return int((predict(model, prompts, patch, batch_size) == targets).sum()) / len(prompts)


# ---------------------------------------------------------------------------------------------
# Many patches of one last token at once
#
# Writing a vector at the LAST token changes nothing at earlier positions, so their keys and
# values are those of the unpatched prompt. We run the prompt without its last token once, keep
# its keys and values, and run the last token alone in a batch of rows, each with its own patch
# (one row per layer, or one per attention head). This uses lesson 04's fast engine,
# course_utils.fast_forward (the Llama block on the HF weights; the bridge's wrapped HF model keeps
# no key/value cache). Same numbers
# as `predict` up to float rounding; tests/test_task_vectors.py compares the two.


@torch.no_grad()
def _last_token_logits(
    model,
    prompt: str,
    resid_births: dict[int, Callable] | None = None,
    attn_births: dict[int, Tensor] | None = None,
) -> Float[Tensor, "row d_vocab"]:
    """Logits after ``prompt``: row 0 unpatched, then one row per patch, in order of layer.

    A row patched at layer L equals the unpatched row before block L, so it is born there as a copy
    (the batch grows layer by layer, and the work is about half of running every row from layer 0).
    ``resid_births[L](base)`` maps the unpatched residual entering block L, [1, 1, d_model], to the
    new rows' residuals [k, 1, d_model]; ``attn_births[L]`` ([k, d_model]) gives k new rows whose
    attention output in block L is set to those values. Earlier positions come from the prefix's
    keys and values."""
    from .fast_forward import Pass, Patch, Weights, block, final_logits, full_run

    resid_births, attn_births = resid_births or {}, attn_births or {}
    w = Weights(model)
    tokens = model.to_tokens(prompt)[0].to(w.embed.device)
    if tokens.shape[0] < 2:
        raise ValueError(f"prompt {prompt!r} has no token before its last one")
    prefix = full_run(w, w.embed[tokens[:-1]][None])
    last = Pass.over(w, tokens.shape[0] - 1, tokens.shape[0], tokens.device)
    x = w.embed[tokens[-1]][None, None]
    for layer in range(w.n_layers):
        patch = None
        if layer in resid_births:
            x = torch.cat([x, resid_births[layer](x[:1])])
        if layer in attn_births:
            values = attn_births[layer]
            rows = torch.arange(x.shape[0], x.shape[0] + values.shape[0], device=x.device)
            x = torch.cat([x, x[:1].expand(values.shape[0], -1, -1)])
            patch = Patch("attn", rows, values)
        n = x.shape[0]
        keys = prefix.keys[layer].expand(n, -1, -1, -1)
        values_ = prefix.values[layer].expand(n, -1, -1, -1)
        x = block(last, layer, x, (keys, values_), patch)[0]
    return final_logits(w, x[:, -1]).float()


def sweep_predictions(
    model,
    prompts: Sequence[str],
    vectors: Float[Tensor, "layer d_model"],
    layers: Sequence[int],
    mode: str = "replace",
    progress: bool = False,
    desc: str = "sweep",
) -> Int[Tensor, "batch layer"]:
    """Greedy next token of each prompt with ``vectors[i]`` written (``mode``) into the residual
    stream entering block ``layers[i]`` at the last token, for every i: one batch per prompt."""
    from tqdm.auto import tqdm

    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
    layers = list(layers)
    if vectors.shape[0] != len(layers):
        raise ValueError(f"{vectors.shape[0]} vectors for {len(layers)} layers")
    rows_of: dict[int, list[int]] = {}
    for row, layer in enumerate(layers):
        rows_of.setdefault(layer, []).append(row)

    def birth(rows):
        def make(base):  # base: [1, 1, d_model]
            value = vectors[rows].to(base.dtype)[:, None]
            return value if mode == "replace" else base + value

        return make

    births = {layer: birth(rows) for layer, rows in rows_of.items()}
    # the engine returns the unpatched row, then the patched rows in order of layer
    order = [row for layer in sorted(rows_of) for row in rows_of[layer]]
    position = torch.empty(len(layers), dtype=torch.long)
    position[order] = torch.arange(1, len(layers) + 1)
    out = [
        _last_token_logits(model, p, resid_births=births)[position].argmax(-1).cpu()
        for p in tqdm(prompts, desc=desc, disable=not progress, leave=False)
    ]
    return torch.stack(out)


# ---------------------------------------------------------------------------------------------
# Function vectors (Todd et al. 2024): per-head outputs, their causal effects, their sum


@torch.no_grad()
def head_means(model, prompts: Sequence[str]) -> Float[Tensor, "layer n_heads d_head"]:
    """Each head's output before W_O (the bridge's ``attn.hook_z``) at the last token, averaged
    over ``prompts``."""
    tokens, last = tokenize(model, prompts)
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    rows = torch.arange(len(prompts), device=tokens.device)
    return torch.stack([cache[name][rows, last].mean(0) for name in names])


@torch.no_grad()
def head_effects(
    model,
    corrupted: Sequence[tuple[str, str]],
    means: Float[Tensor, "layer n_heads d_head"],
    progress: bool = False,
    desc: str = "heads",
) -> Float[Tensor, "layer n_heads"]:
    """Todd et al.'s average indirect effect of every head: for each ``(prompt, answer)`` with
    shuffled demonstrations, p(answer) with that head's output at the last token replaced by its
    mean on clean prompts (``means``), minus p(answer) unpatched, averaged over prompts."""
    from tqdm.auto import tqdm

    n_layers, n_heads, _ = means.shape
    w_o = model.W_O.detach()  # [layer n_heads d_head d_model]
    mean_out = torch.einsum("lhd,lhdm->lhm", means, w_o)  # each head's mean write
    total = torch.zeros(n_layers * n_heads)
    for prompt, answer in tqdm(corrupted, desc=desc, disable=not progress, leave=False):
        target = answer_token_id(model, " " + answer)
        # the unpatched heads' writes at the last token: a row patched at layer L is identical to
        # the unpatched run before block L, so its attention output there is known in advance
        z = head_means(model, [prompt])
        own_out = torch.einsum("lhd,lhdm->lhm", z, w_o)
        births = {
            layer: own_out[layer].sum(0) - own_out[layer] + mean_out[layer]
            for layer in range(n_layers)
        }  # [n_heads d_model] per layer
        logits = _last_token_logits(model, prompt, attn_births=births)  # row 0: unpatched
        probs = logits.softmax(-1)[:, target]
        total += (probs[1:] - probs[0]).cpu()
    return (total / len(corrupted)).reshape(n_layers, n_heads)


def top_heads(effects: Float[Tensor, "layer n_heads"], k: int = 10) -> list[tuple[int, int]]:
    """The ``k`` heads with the largest effect, as ``(layer, head)``, largest first."""
    n_heads = effects.shape[1]
    order = effects.flatten().argsort(descending=True)[:k].tolist()
    return [(i // n_heads, i % n_heads) for i in order]


def function_vector(
    model, means: Float[Tensor, "layer n_heads d_head"], heads: Sequence[tuple[int, int]]
) -> Float[Tensor, " d_model"]:
    """Σ over ``heads`` of the head's mean output written into the residual stream:
    ``means[layer, head] @ W_O[layer, head]`` (this model's attention has no output bias)."""
    if len(heads) == 0:
        raise ValueError("a function vector needs at least one head")
    return sum(means[layer, head] @ model.W_O[layer, head] for layer, head in heads)


# ---------------------------------------------------------------------------------------------
# The protocol: choose the layer on dev, report on test


@dataclass
class TaskVectorResult:
    """One task: zero-shot, ICL and baselines on test; each method's accuracy per layer on dev
    (which chooses the layer) and on test (which is reported at the chosen layer)."""

    task: str
    family: str
    n_layers: int
    n_dev: int
    n_test: int
    zero_shot: float  # on test
    icl: float  # on test, `settings["n_demos"]` demonstrations from train
    majority: float  # the best constant answer on test
    layers: list[int]
    dev: dict[str, list[float]]  # method -> accuracy at layers[i] on dev
    test: dict[str, list[float]]  # method -> accuracy at layers[i] on test (never used to choose)
    test_predictions: dict[str, list[int]]  # method -> greedy token per test query, chosen layer
    settings: dict = field(default_factory=dict)
    theta: Tensor | None = field(default=None, repr=False, compare=False)  # [layer d_model]

    def layer(self, method: str = "replace") -> int:
        """The layer chosen on dev: the highest dev accuracy, the earliest on a tie."""
        dev = self.dev[method]
        return self.layers[max(range(len(dev)), key=lambda i: (dev[i], -i))]

    def accuracy(self, method: str = "replace") -> float:
        """Test accuracy at the layer chosen on dev."""
        return self.test[method][self.layers.index(self.layer(method))]

    def interval(self, method: str | None = "replace") -> tuple[float, float]:
        """95% Wilson interval of the test accuracy (``None``: of the ICL accuracy)."""
        value = self.icl if method is None else self.accuracy(method)
        return wilson_interval(round(value * self.n_test), self.n_test)

    @property
    def baseline(self) -> float:
        """max(zero-shot, majority answer): what a vector must beat to show it carries the task."""
        return max(self.zero_shot, self.majority)

    def top_answer_share(self, method: str = "replace") -> float:
        """The share of test queries receiving the method's most common answer."""
        return top_answer_share(self.test_predictions[method])

    def fraction(self, method: str = "replace") -> float:
        """The chosen layer as a fraction of the depth, in our convention (input of block L)."""
        return self.layer(method) / self.n_layers

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("theta")
        return data

    def row(self, method: str = "replace") -> str:
        n = self.n_test
        return (
            f"{self.task:16} zero-shot {format_accuracy(self.zero_shot, n)}  majority "
            f"{self.majority:.2f}  ICL {format_accuracy(self.icl, n)}  θ "
            f"{format_accuracy(self.accuracy(method), n)} at layer {self.layer(method):2d}"
        )


def load_results(path: str | Path = RESULTS_PATH) -> dict:
    """The stored output of ``scripts/measure_tasks.py --out``: ``{"results": {task:
    TaskVectorResult}, "function_vector": {...}, "settings": {...}}``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names = set(TaskVectorResult.__dataclass_fields__) - {"theta"}
    results = {
        entry["task"]: TaskVectorResult(**{k: v for k, v in entry.items() if k in names})
        for entry in data["results"]
    }
    return {**data, "results": results}


def check_answers(model, task: Task) -> None:
    """Raise a clear error if any answer of ``task`` is not a single token."""
    answer_targets(model, [y for _, y in task.pairs], task.name)


def evaluate_task(
    model,
    task: Task,
    layers: Sequence[int] | None = None,
    *,
    n_dev: int = 10,
    n_test: int = 20,
    n_demos: int = 5,
    n_theta: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> TaskVectorResult:
    """Zero-shot, ICL, majority baseline, and θ patched at every layer, with the layer chosen on
    ``n_dev`` dev queries and the accuracy reported on ``n_test`` test queries.

    θ is averaged over ``n_theta`` prompts built from the training pairs (``task_vector_prompts``)
    and returned in ``result.theta`` ([layer d_model]). Two methods: ``"replace"`` writes θ over the
    zero-shot state (Hendel et al.); ``"add"`` adds θ minus the mean zero-shot state of the
    *training* queries (a mean-difference steering vector; no dev or test query is used to build
    it).
    """
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    check_answers(model, task)
    train, dev, test = task.split(n_dev, n_test, seed)
    rng = random.Random(seed + 1)
    test_queries, test_answers = [x for x, _ in test], [y for _, y in test]
    zero = accuracy(model, [zero_shot_prompt(x) for x in test_queries], test_answers)
    icl_prompts = [icl_prompt(sample_demonstrations(train, n_demos, rng), x) for x in test_queries]
    icl = accuracy(model, icl_prompts, test_answers)
    theta = extract_task_vector(
        model, task_vector_prompts(train, n_theta, n_demos, seed + 2), layers
    )
    zero_state = extract_task_vector(model, [zero_shot_prompt(x) for x, _ in train], layers)
    queries = [zero_shot_prompt(x) for x, _ in dev + test]
    targets = answer_targets(model, [y for _, y in dev + test])
    result = TaskVectorResult(
        task.name,
        task.family,
        model.cfg.n_layers,
        len(dev),
        len(test),
        zero,
        icl,
        majority_baseline(test_answers),
        layers,
        {},
        {},
        {},
        {"n_demos": n_demos, "n_theta": n_theta, "seed": seed},
        theta,
    )
    for method, vectors in (("replace", theta), ("add", theta - zero_state)):
        predictions = sweep_predictions(
            model, queries, vectors, layers, method, progress, desc=f"{task.name} {method}"
        )
        correct = (predictions == targets[:, None]).long()  # exact k / n, not float32 means
        result.dev[method] = (
            [int(k) / len(dev) for k in correct[: len(dev)].sum(0)] if dev else [0.0] * len(layers)
        )
        result.test[method] = [int(k) / len(test) for k in correct[len(dev) :].sum(0)]
        chosen = layers.index(result.layer(method))
        result.test_predictions[method] = predictions[len(dev) :, chosen].tolist()
    return result


def evaluate_function_vector(
    model,
    task: Task,
    fv: Float[Tensor, " d_model"],
    result: TaskVectorResult,
    progress: bool = False,
) -> None:
    """Add ``fv`` at every layer of ``result.layers`` to the dev and test zero-shot prompts of
    ``task`` (same split as ``result``) and store the curves as method ``"function_vector"``."""
    s = result.settings
    _, dev, test = task.split(result.n_dev, result.n_test, s["seed"])
    queries = [zero_shot_prompt(x) for x, _ in dev + test]
    targets = answer_targets(model, [y for _, y in dev + test])
    vectors = fv[None].expand(len(result.layers), -1)
    predictions = sweep_predictions(
        model, queries, vectors, result.layers, "add", progress, desc=f"{task.name} FV"
    )
    correct = (predictions == targets[:, None]).long()
    result.dev["function_vector"] = [int(k) / len(dev) for k in correct[: len(dev)].sum(0)]
    result.test["function_vector"] = [int(k) / len(test) for k in correct[len(dev) :].sum(0)]
    chosen = result.layers.index(result.layer("function_vector"))
    result.test_predictions["function_vector"] = predictions[len(dev) :, chosen].tolist()


def plot_accuracy_by_layer(
    results: TaskVectorResult | Sequence[TaskVectorResult],
    method: str = "replace",
    title: str | None = None,
):
    """Accuracy against layer, one panel per task: ``method`` on dev (which chooses the layer,
    marked) and on test, with zero-shot, the majority baseline and ICL (on test) as horizontal
    lines. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    results = [results] if isinstance(results, TaskVectorResult) else list(results)
    if not results:
        raise ValueError("no results to plot")
    fig, axes = plt.subplots(
        1, len(results), figsize=(4.2 * len(results), 3.4), sharey=True, squeeze=False
    )
    for ax, result in zip(axes[0], results, strict=False):
        ax.plot(result.layers, result.dev[method], ".-", color="0.6", label=f"dev ({result.n_dev})")
        ax.plot(
            result.layers,
            result.test[method],
            "o-",
            color="C2",
            ms=4,
            label=f"test ({result.n_test})",
        )
        ax.axvline(result.layer(method), color="C2", alpha=0.3, lw=6, label="layer chosen on dev")
        ax.axhline(
            result.icl,
            color="C0",
            linestyle="--",
            label=f"ICL ({result.settings['n_demos']} demos)",
        )
        ax.axhline(result.baseline, color="C3", linestyle=":", label="max(zero-shot, majority)")
        ax.set_title(result.task)
        ax.set_xlabel(f"layer (input of block L, of {result.n_layers})")
        ax.set_ylim(-0.03, 1.03)
    axes[0][0].set_ylabel(f"accuracy ({method})")
    axes[0][-1].legend(loc="best", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
