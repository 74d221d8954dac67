"""Benchmark: causal tracing, fast engine vs ROME's loop, on the same fact in one run.

    python benchmarks/tracing.py                 # hidden states, all cells (reference: ~330 forward passes)
    python benchmarks/tracing.py --kinds         # also: wall time of the fast engine for all three kinds
    python benchmarks/tracing.py --threads 2     # torch threads (default: torch's choice)
    python benchmarks/tracing.py --positions 4 10  # only these token positions (a quicker, partial comparison)

Prints both wall times, the speed-up ratio and the largest score difference (must be ≤ 1e-5).
Targets (lesson 04): ratio ≥ 4× for the hidden-state trace; all three kinds of one fact < 30 s on
2 CPU cores. Timings depend on the machine and on whatever else runs on it: run on an idle machine.
With --kinds it also counts the fast engine's matrix-product FLOPs and measures this CPU's float32
matrix-product rate, which bounds how fast an exact trace can be here.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import torch

from course_utils import fast_forward, load_model, tracing
from course_utils.facts import get_fact, load_facts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fact", default="eiffel_tower_city", help="id of a fact in course_utils/data/facts.json"
    )
    parser.add_argument(
        "--kind",
        default="hidden",
        choices=tracing.KINDS,
        help="kind for the fast/reference comparison",
    )
    parser.add_argument(
        "--kinds", action="store_true", help="also time the fast engine on all three kinds"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--positions",
        type=int,
        nargs="*",
        default=None,
        help="trace only these positions (default: all); the ratio then covers those rows only",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_model(device="cpu")
    fact = get_fact(args.fact)
    scale = tracing.NOISE_MULTIPLIER * tracing.subject_embedding_std(
        model, [f["subject"] for f in load_facts()]
    )
    common = (model, fact["prompt"], fact["subject"], fact["answer"], args.kind)
    print(
        f"fact: {fact['prompt']!r} -> {fact['answer']!r}; subject {fact['subject']!r}; "
        f"{model.to_tokens(fact['prompt']).shape[1]} tokens; torch threads "
        f"{torch.get_num_threads()}"
    )
    tracing.trace(*common, noise_scale=scale, layers=[0], positions=[1], progress=False)  # warm-up

    start = time.perf_counter()
    fast = tracing.trace(*common, noise_scale=scale, positions=args.positions, progress=False)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = tracing.trace_reference(
        *common, noise_scale=scale, positions=args.positions, progress=True
    )
    reference_s = time.perf_counter() - start
    diff = float(torch.nan_to_num(fast.scores - reference.scores).abs().max())
    rows = "all positions" if args.positions is None else f"positions {args.positions}"
    print(
        f"{args.kind}, {rows}: reference {reference_s:.1f} s, fast {fast_s:.1f} s, "
        f"speed-up {reference_s / fast_s:.1f}x, max |diff| {diff:.1e}"
    )
    if diff > 1e-5:
        raise SystemExit(f"the engines disagree: max |diff| {diff:.1e} > 1e-5")

    if args.kinds:
        total = 0.0
        for kind in tracing.KINDS:
            start = time.perf_counter()
            tracing.trace(
                model,
                fact["prompt"],
                fact["subject"],
                fact["answer"],
                kind,
                noise_scale=scale,
                progress=False,
            )
            elapsed = time.perf_counter() - start
            total += elapsed
            print(f"fast {kind}: {elapsed:.1f} s")
        print(f"all three kinds, one trace() each: {total:.1f} s")
        with counting_matrix_products() as count:
            start = time.perf_counter()
            tracing.trace_all_kinds(
                model,
                fact["prompt"],
                fact["subject"],
                fact["answer"],
                noise_scale=scale,
                progress=False,
            )
            elapsed = time.perf_counter() - start
        peak = sgemm_peak()
        print(
            f"all three kinds, trace_all_kinds (shared clean/corrupted runs): {elapsed:.1f} s, of "
            "which matrix products "
            f"{count['flop'] / 1e12:.2f} TFLOP in {count['seconds']:.1f} s "
            f"({count['flop'] / count['seconds'] / 1e9:.0f} GFLOP/s)"
        )
        print(
            f"this CPU's float32 matrix-product peak, measured now: {peak / 1e9:.0f} GFLOP/s, so "
            "the matrix products "
            f"alone need at least {count['flop'] / peak:.1f} s"
        )


@contextmanager
def counting_matrix_products():
    """Count the FLOPs and time of every F.linear the fast engine runs (its matrix products)."""
    count = {"flop": 0, "seconds": 0.0}
    linear = fast_forward.F.linear

    def counted(x, weight, bias=None):
        start = time.perf_counter()
        out = linear(x, weight, bias)
        count["seconds"] += time.perf_counter() - start
        count["flop"] += 2 * (x.numel() // x.shape[-1]) * weight.shape[0] * weight.shape[1]
        return out

    fast_forward.F.linear = counted
    try:
        yield count
    finally:
        fast_forward.F.linear = linear


def sgemm_peak(rows: int = 3000, repeats: int = 20) -> float:
    """FLOP/s of the engine's most common product ([rows, 576] x [576, 1536]) on this machine."""
    x, weight = torch.randn(rows, 576), torch.randn(1536, 576)
    fast_forward.F.linear(x, weight)
    start = time.perf_counter()
    for _ in range(repeats):
        fast_forward.F.linear(x, weight)
    return repeats * 2 * rows * 576 * 1536 / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
