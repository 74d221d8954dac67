"""In-context learning task vectors (lesson 05).

Hendel, Geva & Globerson (2023), "In-Context Learning Creates Task Vectors": give a model a few
demonstrations ``x -> y`` and a query; at some layer L the residual state at the last token (the
arrow of the query) holds a summary of the task, θ. Write θ into a prompt that has *no*
demonstrations, ``query ->``, at the same layer and position, and the model does the task anyway.

This module ships the task data (``course_utils/data/tasks.json``), builds the prompts, extracts θ
(from one prompt, or averaged over several prompts with different demonstrations and dummy
queries), patches it in by replacement (Hendel et al.) or by addition (the function-vector style
of Todd et al. 2024), and measures accuracy per layer.

Conventions: every prompt starts with the model's BOS (``<|endoftext|>``, added here); an answer is
scored as the single token ``" " + y``; "layer L" means the residual stream *entering* block L,
hook ``blocks.{L}.hook_resid_pre``, so L = 0 is the token embedding and L/n_layers is the fraction
of the depth the model has run before θ is read or written.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

TASKS_PATH = Path(__file__).resolve().parent / "data" / "tasks.json"
# the full table, written by `scripts/measure_tasks.py --out` (every task, every second layer)
RESULTS_PATH = Path(__file__).resolve().parent / "data" / "task_vector_results.json"
ARROW = " ->"
SEPARATOR = "\n"
FAMILIES = ("algorithmic", "linguistic", "knowledge", "translation")
# Hendel et al. 2023 (Table 1, Figure 3): their best layer lies at 0.3-0.46 of the depth, and over
# 18 tasks the mean accuracy is 0.13 zero-shot, 0.74 with the task vector and 0.84 with ICL.
HENDEL_BEST_LAYER_FRACTION = (0.30, 0.46)
HENDEL_MEAN_ACCURACY = {"zero_shot": 0.13, "task_vector": 0.74, "icl": 0.84}

Pair = tuple[str, str]


def resid_hook_name(layer: int) -> str:
    """The hook holding the residual stream entering block ``layer``."""
    return f"blocks.{layer}.hook_resid_pre"


# ---------------------------------------------------------------------------------------------
# Task data


@dataclass(frozen=True)
class Task:
    """One in-context learning task: a name, a family and its ``(query, answer)`` pairs."""

    name: str
    family: str
    description: str
    pairs: tuple[Pair, ...]

    def split(self, n_test: int, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
        """``(train, test)``: ``n_test`` held-out queries, the rest for demonstrations.

        Demonstrations and the dummy queries used to build θ are drawn from ``train`` only, so a
        test query never appears in the prompt that produced the task vector.
        """
        if not 0 < n_test < len(self.pairs):
            raise ValueError(
                f"task {self.name!r} has {len(self.pairs)} pairs; n_test must be between 1 "
                f"and {len(self.pairs) - 1}, got {n_test}"
            )
        pairs = list(self.pairs)
        random.Random(seed).shuffle(pairs)
        return pairs[n_test:], pairs[:n_test]


def load_tasks(path: str | Path = TASKS_PATH) -> dict[str, Task]:
    """All tasks in the data file, by name, in file order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    tasks = {}
    for name, entry in data["tasks"].items():
        pairs = tuple((str(x), str(y)) for x, y in entry["pairs"])
        tasks[name] = Task(name, entry["family"], entry["description"], pairs)
    return tasks


def load_task(name: str, path: str | Path = TASKS_PATH) -> Task:
    """One task by name, e.g. ``load_task("antonyms")``."""
    tasks = load_tasks(path)
    if name not in tasks:
        raise KeyError(f"no task {name!r}; available: {', '.join(tasks)}")
    return tasks[name]


def answer_ids(model, answers: Sequence[str], task: str = "") -> Int[Tensor, "batch"]:
    """Token ids of ``" " + answer`` for each answer; each must be exactly one token."""
    ids = []
    for answer in answers:
        pieces = model.tokenizer.encode(" " + answer, add_special_tokens=False)
        if len(pieces) != 1:
            where = f" in task {task!r}" if task else ""
            raise ValueError(
                f"answer {answer!r}{where} is {len(pieces)} tokens "
                f"{[model.tokenizer.decode([p]) for p in pieces]} under this model's tokenizer, not one. "
                "Accuracy is scored on a single next token: drop this pair, or keep only pairs whose "
                "answer is one token (scripts/measure_tasks.py --check-only lists them)."
            )
        ids.append(pieces[0])
    return torch.tensor(ids, dtype=torch.long)


def single_token_pairs(model, pairs: Sequence[Pair]) -> list[Pair]:
    """The pairs whose answer is one token (with its leading space) under ``model``'s tokenizer."""
    return [
        (x, y)
        for x, y in pairs
        if len(model.tokenizer.encode(" " + y, add_special_tokens=False)) == 1
    ]


# ---------------------------------------------------------------------------------------------
# Prompts


def icl_prompt(demonstrations: Sequence[Pair], query: str) -> str:
    """Hendel et al.'s format: one ``x -> y`` line per demonstration, then ``query ->``.

    >>> icl_prompt([("a b c", "c"), ("d e f", "f")], "g h i")
    'a b c -> c\\nd e f -> f\\ng h i ->'
    """
    if len(demonstrations) == 0:
        raise ValueError(
            "an in-context prompt needs at least one demonstration (x, y); with none it is "
            "the zero-shot prompt: use zero_shot_prompt(query)"
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
    """``n_prompts`` ICL prompts built from ``train`` only: ``n_demos`` demonstrations and a dummy query
    (another training pair's ``x``) each. Averaging θ over them removes what is specific to one
    query and keeps what the prompts share: the task."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n_prompts):
        dummy = rng.choice(train)
        prompts.append(
            icl_prompt(sample_demonstrations(train, n_demos, rng, exclude=dummy[0]), dummy[0])
        )
    return prompts


def tokenize(
    model, prompts: Sequence[str]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch"]]:
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

    One prompt gives Hendel et al.'s single θ; several (``task_vector_prompts``) give the averaged θ.
    ``layers`` defaults to every block ``0 .. n_layers - 1``.
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


def make_patch_hook(
    vector: Float[Tensor, "d_model"],
    positions: Int[Tensor, "batch"],
    mode: str = "replace",
    scale: float = 1.0,
) -> Callable:
    """A forward hook that writes ``vector`` into the residual stream at one position per prompt.

    mode ``"replace"``: resid[b, positions[b]] = scale * vector (Hendel et al.);
    mode ``"add"``:     resid[b, positions[b]] += scale * vector (function-vector style).
    """
    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")

    def hook(
        resid: Float[Tensor, "batch pos d_model"], hook=None
    ) -> Float[Tensor, "batch pos d_model"]:
        rows = torch.arange(resid.shape[0], device=resid.device)
        cols = positions.to(resid.device)
        value = scale * vector.to(resid.device, resid.dtype)
        resid = resid.clone()
        if mode == "replace":
            resid[rows, cols] = value
        else:
            resid[rows, cols] = resid[rows, cols] + value
        return resid

    return hook


@torch.no_grad()
def predict(
    model,
    prompts: Sequence[str],
    patch: tuple[int, Tensor, str] | None = None,
    batch_size: int = 32,
) -> Int[Tensor, "batch"]:
    """Greedy next token after each prompt; ``patch = (layer, vector, mode)`` writes ``vector`` at the
    last token entering ``layer`` first."""
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
    targets = answer_ids(model, answers)
    return int((predict(model, prompts, patch, batch_size) == targets).sum()) / len(prompts)


# ---------------------------------------------------------------------------------------------
# The layer sweep


@dataclass
class TaskVectorResult:
    """Accuracy of one task on held-out queries: zero-shot, ICL, and θ patched at each layer."""

    task: str
    family: str
    n_layers: int
    n_queries: int
    zero_shot: float
    icl: float
    layers: list[int]
    task_vector: list[float]  # accuracy with θ patched at layers[i]
    mode: str = "replace"
    settings: dict = field(default_factory=dict)

    @property
    def best_layer(self) -> int | None:
        """The layer with the highest task-vector accuracy (the earliest on a tie); None without a sweep."""
        if not self.layers:
            return None
        return self.layers[max(range(len(self.layers)), key=lambda i: (self.task_vector[i], -i))]

    @property
    def best_accuracy(self) -> float | None:
        return max(self.task_vector) if self.task_vector else None

    @property
    def best_fraction(self) -> float | None:
        """The best layer as a fraction of the depth (Hendel et al.: 0.3-0.46)."""
        return None if self.best_layer is None else self.best_layer / self.n_layers

    def to_dict(self) -> dict:
        return {**asdict(self), "best_layer": self.best_layer, "best_accuracy": self.best_accuracy}

    def row(self) -> str:
        text = f"{self.task:17} {self.family:12} zero-shot {self.zero_shot:.2f}  ICL {self.icl:.2f}"
        if self.layers:
            text += f"  task vector {self.best_accuracy:.2f} at layer {self.best_layer:2d}/{self.n_layers}"
        return text


def load_results(path: str | Path = RESULTS_PATH) -> list[TaskVectorResult]:
    """The stored results of ``scripts/measure_tasks.py --out`` as ``TaskVectorResult`` objects."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    names = {f for f in TaskVectorResult.__dataclass_fields__}
    return [
        TaskVectorResult(**{k: v for k, v in entry.items() if k in names})
        for entry in data["results"]
    ]


def evaluate_task(
    model,
    task: Task,
    layers: Sequence[int] | None = None,
    *,
    n_test: int = 20,
    n_demos: int = 5,
    n_theta: int = 10,
    mode: str = "replace",
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> TaskVectorResult:
    """Zero-shot, ICL and task-vector accuracy of ``task`` on ``n_test`` held-out queries.

    θ is averaged over ``n_theta`` prompts built from the training pairs (``task_vector_prompts``)
    and, for each layer, patched at the last token of every zero-shot prompt ``query ->``.
    With ``mode="add"`` the patched vector is θ minus the mean zero-shot state at that layer, added.
    """
    from tqdm.auto import tqdm

    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    answer_ids(model, [y for _, y in task.pairs], task.name)  # fail early, naming the bad answer
    train, test = task.split(n_test, seed)
    rng = random.Random(seed + 1)
    queries, answers = [x for x, _ in test], [y for _, y in test]
    zero_prompts = [zero_shot_prompt(x) for x in queries]
    icl_prompts = [icl_prompt(sample_demonstrations(train, n_demos, rng), x) for x in queries]
    theta = extract_task_vector(
        model, task_vector_prompts(train, n_theta, n_demos, seed + 2), layers
    )
    if mode == "add":
        theta = theta - extract_task_vector(model, zero_prompts, layers)
    zero = accuracy(model, zero_prompts, answers, batch_size=batch_size)
    icl = accuracy(model, icl_prompts, answers, batch_size=batch_size)
    per_layer = []
    for i, layer in enumerate(tqdm(layers, desc=task.name, disable=not progress, leave=False)):
        per_layer.append(
            accuracy(model, zero_prompts, answers, (layer, theta[i], mode), batch_size)
        )
    settings = {"n_demos": n_demos, "n_theta": n_theta, "seed": seed}
    return TaskVectorResult(
        task.name,
        task.family,
        model.cfg.n_layers,
        len(test),
        zero,
        icl,
        layers,
        per_layer,
        mode,
        settings,
    )


def plot_accuracy_by_layer(
    results: TaskVectorResult | Sequence[TaskVectorResult], title: str | None = None
):
    """Accuracy against layer, one panel per task: θ patched at each layer, with zero-shot and ICL as
    horizontal lines and Hendel et al.'s best-layer band shaded. Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    results = [results] if isinstance(results, TaskVectorResult) else list(results)
    if not results:
        raise ValueError("no results to plot")
    fig, axes = plt.subplots(
        1, len(results), figsize=(4.2 * len(results), 3.4), sharey=True, squeeze=False
    )
    for ax, result in zip(axes[0], results):
        lo, hi = HENDEL_BEST_LAYER_FRACTION
        ax.axvspan(
            lo * result.n_layers, hi * result.n_layers, color="0.9", label="Hendel best layers"
        )
        ax.plot(
            result.layers,
            result.task_vector,
            "o-",
            color="C2",
            label=f"task vector ({result.mode})",
        )
        ax.axhline(result.icl, color="C0", linestyle="--", label="ICL (5 demos)")
        ax.axhline(result.zero_shot, color="C3", linestyle=":", label="zero-shot")
        ax.set_title(result.task)
        ax.set_xlabel(f"layer (of {result.n_layers})")
        ax.set_ylim(-0.03, 1.03)
    axes[0][0].set_ylabel(f"accuracy ({results[0].n_queries} held-out queries)")
    axes[0][-1].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
