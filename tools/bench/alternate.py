"""Run several runtimes in separate processes, alternately, for several rounds; summarise their time ratios.

onnxruntime thread pools of two runtimes in one process disturb each other, and this machine is noisy,
so each round starts one fresh process per runtime (order rotated every round) and we report the median
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


def rounds_of(script: str, modes: tuple[str, ...], common: list[str], rounds: int) -> tuple[dict, dict]:
    """Per round, `script --worker MODE *common` for every mode (order rotated each round): (times, last outputs)."""
    times: dict[str, list[float]] = {m: [] for m in modes}
    got: dict[str, dict] = {}
    for r in range(rounds):
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:  # each mode leads in turn
            got[mode] = run_worker(script, ["--worker", mode, *common])
            times[mode].append(got[mode]["seconds"])
    return times, got


def summarise(times: dict[str, list[float]], reference: str, mode: str, extra: dict | None = None) -> dict:
    """The median and spread over rounds of `mode`'s time over `reference`'s (taken in the same round)."""
    ratios = [b / a for a, b in zip(times[reference], times[mode])]
    q25, q75 = np.percentile(ratios, [25, 75])
    return {"ratio": statistics.median(ratios), "iqr": (float(q25), float(q75)), "min": min(ratios), "max": max(ratios),
            "median_seconds": {m: statistics.median(times[m]) for m in (reference, mode)}, "extra": extra or {}}


def alternate(script: str, modes: tuple[str, str], common: list[str], rounds: int) -> dict:
    """Two runtimes alternated; ratio = modes[1] time / modes[0] time."""
    times, got = rounds_of(script, modes, common, rounds)
    return summarise(times, modes[0], modes[1], got)


def describe(label: str, s: dict, unit_scale: float = 1e3, unit: str = "ms") -> str:
    (a, b) = list(s["median_seconds"])
    return (f"{label}: {s['ratio']:.3f} (IQR {s['iqr'][0]:.3f}-{s['iqr'][1]:.3f}, min {s['min']:.3f}, max {s['max']:.3f}; "
            f"median {unit_scale * s['median_seconds'][a]:.3f} {unit} {a} vs {unit_scale * s['median_seconds'][b]:.3f} {unit} {b})")
