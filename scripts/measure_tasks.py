"""Measure the lesson-05 tasks on a model: zero-shot, ICL and task-vector accuracy per task.

    python scripts/measure_tasks.py --check-only                 # every answer one token? (fast)
    python scripts/measure_tasks.py --no-sweep                   # zero-shot and ICL only
    python scripts/measure_tasks.py --threads 1 --out course_utils/data/task_vector_results.json
    python scripts/measure_tasks.py --model HuggingFaceTB/SmolLM2-360M --tasks antonyms,en_fr

Accuracy is greedy top-1. Each task is split into training pairs (demonstrations, dummy queries),
dev queries (choose the layer) and test queries (reported, with 95% Wilson intervals).
The table printed at the end is the one lesson 05 quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from course_utils import load_model, seed_everything  # noqa: E402
from course_utils import task_vectors as tv  # noqa: E402


def parse_layers(text: str, n_layers: int) -> list[int]:
    """``all``, ``none``, ``a:b[:step]`` or ``3,9,15``."""
    if text == "all":
        return list(range(n_layers))
    if text == "none":
        return []
    if ":" in text:
        parts = [int(p) for p in text.split(":")]
        return list(range(*parts))
    return [int(p) for p in text.split(",")]


def check_tokens(model, tasks: dict[str, tv.Task]) -> int:
    """Print each task's size and any answer that is not one token; return the number of bad
    pairs."""
    bad_total = 0
    for task in tasks.values():
        good = tv.single_token_pairs(model, task.pairs)
        bad = [y for x, y in task.pairs if (x, y) not in good]
        queries = [x for x, _ in task.pairs]
        duplicates = len(queries) - len(set(queries))
        identical = sum(x == y for x, y in task.pairs)
        status = "ok" if not bad and not duplicates and len(task.pairs) >= 30 else "PROBLEM"
        print(
            f"{task.name:17} {task.family:12} {len(task.pairs):3d} pairs, {identical:2d} with "
            "answer == query, "
            f"{len(bad)} multi-token answers {bad[:5]}, {duplicates} duplicate queries: {status}"
        )
        bad_total += len(bad) + duplicates + (len(task.pairs) < 30)
    return bad_total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        default=None,
        help="model name for load_model (default: the embedded SmolLM2-135M)",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    parser.add_argument(
        "--layers", default="all", help="all | none | a:b[:step] | 3,9,15 (default: all)"
    )
    parser.add_argument(
        "--n-dev", type=int, default=10, help="dev queries per task (choose the layer)"
    )
    parser.add_argument("--n-test", type=int, default=20, help="test queries per task (reported)")
    parser.add_argument("--n-demos", type=int, default=5)
    parser.add_argument("--n-theta", type=int, default=10, help="prompts averaged into θ")
    parser.add_argument(
        "--fv-heads", type=int, default=10, help="heads in the function vector (0: none)"
    )
    parser.add_argument("--fv-prompts", type=int, default=4, help="shuffled-label prompts per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 helps on a busy machine)"
    )
    parser.add_argument("--no-sweep", action="store_true", help="zero-shot and ICL only")
    parser.add_argument(
        "--check-only", action="store_true", help="only check that every answer is one token"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    model = load_model(args.model, device=args.device)
    tasks = tv.load_tasks()
    if args.tasks:
        tasks = {name: tasks[name] for name in args.tasks.split(",")}
    problems = check_tokens(model, tasks)
    if args.check_only:
        return 1 if problems else 0
    if problems:
        print("fix the data first: every answer must be one token", file=sys.stderr)
        return 1

    layers = [] if args.no_sweep else parse_layers(args.layers, model.cfg.n_layers)
    results = {}
    for task in tasks.values():
        result = tv.evaluate_task(
            model,
            task,
            layers,
            n_dev=args.n_dev,
            n_test=args.n_test,
            n_demos=args.n_demos,
            n_theta=args.n_theta,
            seed=args.seed,
        )
        results[task.name] = result
        print(result.row(), flush=True)

    # Todd et al.'s function vector: heads ranked by their average indirect effect over the tasks
    # (shuffled-label prompts from the training pairs), top k summed per task, added at each layer
    fv_info = None
    if args.fv_heads and len(layers) == model.cfg.n_layers:
        effects, means = [], {}
        for task in tasks.values():
            train, _, _ = task.split(args.n_dev, args.n_test, args.seed)
            means[task.name] = tv.head_means(
                model, tv.task_vector_prompts(train, args.n_theta, args.n_demos, args.seed + 2)
            )
            corrupted = tv.shuffled_label_prompts(
                train, args.fv_prompts, args.n_demos, args.seed + 3
            )
            effects.append(
                tv.head_effects(
                    model, corrupted, means[task.name], progress=True, desc=f"{task.name} heads"
                )
            )
        mean_effect = torch.stack(effects).mean(0)
        heads = tv.top_heads(mean_effect, args.fv_heads)
        print(
            "function-vector heads (layer, head, effect): "
            + ", ".join(f"({layer}, {h}, {mean_effect[layer, h]:.4f})" for layer, h in heads),
            flush=True,
        )
        for task in tasks.values():
            fv = tv.function_vector(model, means[task.name], heads)
            tv.evaluate_function_vector(model, task, fv, results[task.name])
            r = results[task.name]
            print(
                f"{task.name:16} function vector "
                f"{tv.format_accuracy(r.accuracy('function_vector'), r.n_test)}"
                f" at layer {r.layer('function_vector')}",
                flush=True,
            )
        fv_info = {
            "heads": heads,
            "effects": [[round(float(v), 6) for v in row] for row in mean_effect],
            "per_task_effects": {
                name: [[round(float(v), 6) for v in row] for row in e]
                for name, e in zip(tasks, effects, strict=False)
            },
            "n_prompts": args.fv_prompts,
        }

    print(
        "\n| task | family | zero-shot | majority | ICL | θ (replace) | layer | add | layer | FV | "
        "layer |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results.values():
        row = (
            f"| {r.task} | {r.family} | {tv.format_accuracy(r.zero_shot, r.n_test)} | "
            f"{r.majority:.2f} | {tv.format_accuracy(r.icl, r.n_test)} |"
        )
        for method in tv.METHODS:
            if method in r.dev:
                row += f" {tv.format_accuracy(r.accuracy(method), r.n_test)} | {r.layer(method)} |"
        print(row)
    if args.out:
        payload = {
            "model": args.model or "SmolLM2-135M-Instruct dequantized from a Q4_1 GGUF file",
            "args": vars(args),
            "results": [r.to_dict() for r in results.values()],
            "function_vector": fv_info,
        }
        Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
