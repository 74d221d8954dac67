"""Benchmark: grade N submissions of lesson 00 (default 50) and print wall time and
submissions/minute.

    .venv/bin/python benchmarks/grading.py [--n 50] [--workers 0]

The submissions are honest ones (correct, partially correct, untouched stub, in turn), built by the
test fixtures' code, so the figure is what an instructor's typical batch costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from course_utils.grading.batch import Settings, grade_folder
from course_utils.grading.sandbox import can_isolate
from course_utils.paths import ROOT


def _load_fixtures():
    """tests/grading_fixtures/lesson00.py (the submissions the grading tests use), by path."""
    path = ROOT / "tests" / "grading_fixtures" / "lesson00.py"
    spec = importlib.util.spec_from_file_location("lesson00", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--workers", type=int, default=0, help="default: one per CPU core")
    args = parser.parse_args()
    cases = _load_fixtures().kernel_submissions(include_destructive=False)
    honest = [
        cases[name]
        for name in ("honest_correct.ipynb", "honest_partial.ipynb", "honest_stub.ipynb")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "submissions"
        folder.mkdir()
        expected_total = 0
        for i in range(args.n):
            nb, p1, p2, _ = honest[i % len(honest)]
            (folder / f"student{i:03d}.ipynb").write_text(nbformat.writes(nb))
            expected_total += p1 + p2
        workers = args.workers or os.cpu_count() or 1
        load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
        start = time.perf_counter()
        results = grade_folder(
            "00",
            folder,
            Path(tmp) / "out",
            Settings(workers=workers),
            progress=lambda r: print(
                f"  {r.submission}: {r.total:g} {r.error}", file=sys.stderr, flush=True
            ),
        )
        wall = time.perf_counter() - start
    total = sum(r.total for r in results)
    errors = sum(1 for r in results if r.error)
    levels = sorted({r.isolation for r in results if r.isolation}) or ["limits only"]
    print(
        f"lesson 00: {len(results)} submissions, {workers} workers, isolation {'; '.join(levels)} "
        f"(root: {can_isolate()}), {os.cpu_count()} CPU cores, load average before/after "
        f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"
    )
    print(f"points {total:g} (expected {expected_total}), rows with errors {errors}")
    print(
        f"wall time {wall:.1f} s, {len(results) / wall * 60:.1f} submissions per minute, "
        f"{wall / len(results):.1f} s per submission"
    )


if __name__ == "__main__":
    main()
