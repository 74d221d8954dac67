"""Benchmark: execute every solution notebook headless; print wall time and peak memory of each.

Each notebook runs in a fresh process (nbclient + its own kernel) on a copy, so the repository is
not modified. Peak RSS is the kernel's (the largest child process the runner waited for).
Targets on a 2-core CPU, offline: every notebook < 90 s, the whole course < 6 minutes, peak RSS
< 3 GB.
Usage: python benchmarks/course.py [solutions/NN_x.ipynb ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from course_utils.paths import lesson_paths

RUNNER = r"""
import json, resource, sys, time
import nbformat
from nbclient import NotebookClient
path = sys.argv[1]
nb = nbformat.read(path, as_version=4)
start = time.perf_counter()
resources = {"metadata": {"path": sys.argv[2]}}
NotebookClient(nb, timeout=900, kernel_name="python3", resources=resources).execute()
wall = time.perf_counter() - start
errors = sum(o.output_type == "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_rss_mb": peak_kib / 1024, "errors": errors}))
"""


def run(path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(path), str(path.parent)], capture_output=True, text=True
    )
    if done.returncode != 0:
        return {
            "wall_s": float("nan"),
            "peak_rss_mb": float("nan"),
            "errors": f"failed: {done.stderr.strip()[-200:]}",
        }
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(paths: list[str]) -> int:
    notebooks = [Path(p).resolve() for p in paths] or lesson_paths()
    print(f"{'notebook':34} {'wall (s)':>9} {'peak RSS (MB)':>14} {'errors':>7}")
    total, peak, slowest, ok = 0.0, 0.0, 0.0, True
    start = time.perf_counter()
    for path in notebooks:
        row = run(path)
        total += row["wall_s"]
        peak = max(peak, row["peak_rss_mb"])
        slowest = max(slowest, row["wall_s"])
        flags = ("" if row["wall_s"] < 90 else "  > 90 s target") + (
            "" if row["peak_rss_mb"] < 3000 else "  > 3 GB target"
        )
        ok = ok and row["errors"] == 0
        numbers = f"{row['wall_s']:9.1f} {row['peak_rss_mb']:14.0f} {row['errors']!s:>7}"
        print(f"{path.name:34} {numbers}{flags}", flush=True)
    print(f"{'total (cells executing)':34} {total:9.1f} {peak:14.0f}")
    print(f"{'total (with kernel start-ups)':34} {time.perf_counter() - start:9.1f}")
    met = slowest < 90 and total < 360 and peak < 3000
    print(
        f"targets: each < 90 s (slowest {slowest:.1f}), total < 360 s ({total:.1f}), "
        f"peak RSS < 3000 MB ({peak:.0f})"
        f" -> {'met' if met else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
