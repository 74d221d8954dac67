"""Benchmark: embedded-model load time, cold (empty cache) and warm, and peak memory.

Each measurement runs in a fresh Python process so imports and caches do not leak between them.
Prints seconds for: importing the libraries, a cold load (dequantize + cache), a warm load; and the
peak resident memory of each process. Usage: python benchmarks/model_load.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
import torch, transformers, transformer_lens.model_bridge  # noqa: F401
imported = time.perf_counter()
from course_utils import load_model
model = load_model(device="cpu")
loaded = time.perf_counter()
with torch.no_grad():
    model("The Eiffel Tower is located in the city of")
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
row = {"import_s": imported - start, "load_s": loaded - imported, "peak_rss_mb": peak_kib / 1024}
print(json.dumps(row))
"""


def measure(cache: str) -> dict:
    env = dict(os.environ, RSL_CACHE_DIR=cache, HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        cold = measure(cache)
        warm = measure(cache)
    print(f"{'':6} {'imports (s)':>12} {'load_model (s)':>15} {'peak RSS (MB)':>14}")
    for name, row in (("cold", cold), ("warm", warm)):
        print(f"{name:6} {row['import_s']:12.1f} {row['load_s']:15.1f} {row['peak_rss_mb']:14.0f}")
    ratio = cold["load_s"] / warm["load_s"]
    print(f"cold/warm load ratio: {ratio:.1f}x  (targets: warm < 3 s, cold < 20 s)")


if __name__ == "__main__":
    main()
