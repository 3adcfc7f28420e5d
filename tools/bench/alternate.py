"""Run two runtimes in separate processes, alternately, for several rounds; summarise the time ratio.

onnxruntime thread pools of two runtimes in one process disturb each other, and this machine is noisy,
so each round starts one fresh process per runtime (order swapped every round) and we report the median
of the per-round ratios with its spread, never an absolute time on its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import numpy as np


def run_worker(script: str, args: list[str]) -> dict:
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(args)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def alternate(script: str, modes: tuple[str, str], common: list[str], rounds: int) -> dict:
    """Per round, run `script --worker MODE *common` for both modes; ratio = modes[1] time / modes[0] time."""
    ratios, times = [], {m: [] for m in modes}
    for r in range(rounds):
        got = {}
        for mode in (modes if r % 2 == 0 else modes[::-1]):
            got[mode] = run_worker(script, ["--worker", mode, *common])
            times[mode].append(got[mode]["seconds"])
        ratios.append(got[modes[1]]["seconds"] / got[modes[0]]["seconds"])
    q25, q75 = np.percentile(ratios, [25, 75])
    return {"ratio": statistics.median(ratios), "iqr": (float(q25), float(q75)), "min": min(ratios), "max": max(ratios),
            "median_seconds": {m: statistics.median(t) for m, t in times.items()}, "extra": got}


def describe(label: str, s: dict, unit_scale: float = 1e3, unit: str = "ms") -> str:
    (a, b) = list(s["median_seconds"])
    return (f"{label}: {s['ratio']:.3f} (IQR {s['iqr'][0]:.3f}-{s['iqr'][1]:.3f}, min {s['min']:.3f}, max {s['max']:.3f}; "
            f"median {unit_scale * s['median_seconds'][a]:.3f} {unit} {a} vs {unit_scale * s['median_seconds'][b]:.3f} {unit} {b})")
