"""Measure the lesson-05 tasks on a model: zero-shot, ICL and task-vector accuracy per task.

    python scripts/measure_tasks.py --check-only                 # every answer one token? (fast)
    python scripts/measure_tasks.py --no-sweep                   # zero-shot and ICL only
    python scripts/measure_tasks.py --layers all --out results.json   # the full table (slow on CPU)
    python scripts/measure_tasks.py --model HuggingFaceTB/SmolLM2-360M --tasks antonyms,en_fr

Accuracy is greedy top-1 on held-out queries (never used as demonstrations or dummy queries).
The table printed at the end is the one lesson 05 quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from course_utils import load_model, seed_everything
from course_utils import task_vectors as tv


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
    """Print each task's size and any answer that is not one token; return the bad pairs' count."""
    bad_total = 0
    for task in tasks.values():
        good = tv.single_token_pairs(model, task.pairs)
        bad = [y for x, y in task.pairs if (x, y) not in good]
        queries = [x for x, _ in task.pairs]
        duplicates = len(queries) - len(set(queries))
        identical = sum(x == y for x, y in task.pairs)
        status = "ok" if not bad and not duplicates and len(task.pairs) >= 30 else "PROBLEM"
        print(
            f"{task.name:17} {task.family:12} {len(task.pairs):3d} pairs, "
            f"{identical:2d} with answer == query, "
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
    parser.add_argument("--n-test", type=int, default=20, help="held-out queries per task")
    parser.add_argument("--n-demos", type=int, default=5)
    parser.add_argument("--n-theta", type=int, default=10, help="prompts averaged into θ")
    parser.add_argument("--mode", choices=["replace", "add"], default="replace")
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
    results = []
    for task in tasks.values():
        result = tv.evaluate_task(
            model,
            task,
            layers,
            n_test=args.n_test,
            n_demos=args.n_demos,
            n_theta=args.n_theta,
            mode=args.mode,
            seed=args.seed,
        )
        results.append(result)
        line = result.row()
        if layers:
            line += "  per layer " + " ".join(f"{a:.2f}" for a in result.task_vector)
        print(line, flush=True)

    print(
        "\n| task | family | zero-shot | ICL |" + (" task vector | best layer |" if layers else "")
    )
    print("|---|---|---|---|" + ("---|---|" if layers else ""))
    for r in results:
        row = f"| {r.task} | {r.family} | {r.zero_shot:.2f} | {r.icl:.2f} |"
        if layers:
            row += f" {r.best_accuracy:.2f} | {r.best_layer}/{r.n_layers} ({r.best_fraction:.2f}) |"
        print(row)
    n = len(results)
    mean = {
        "zero-shot": sum(r.zero_shot for r in results) / n,
        "ICL": sum(r.icl for r in results) / n,
    }
    if layers:
        mean["task vector"] = sum(r.best_accuracy for r in results) / n
    print("mean: " + ", ".join(f"{k} {v:.2f}" for k, v in mean.items()))
    if args.out:
        payload = {
            "model": args.model or "SmolLM2-135M-Instruct (embedded)",
            "args": vars(args),
            "results": [r.to_dict() for r in results],
        }
        Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
