"""Speed of threshold calibration: 7 exits, 10,000 samples, each policy, and a 20-budget curve.

Synthetic per-exit outputs (later exits stronger, samples of varying difficulty). Prints the median
and min / max over repeats, in milliseconds.

    .venv/bin/python tools/bench/calibrate_speed.py [--samples 10000] [--repeats 5] [--points 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

from edgeexit.calibrate import (
    Budget,
    budget_curve,
    calibrate_fixed,
    calibrate_fractions,
    calibrate_gater,
    calibrate_search,
)

EXITS, CLASSES = 7, 10


def synthetic(n: int):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, n)
    ease = rng.uniform(size=n)
    logits = rng.normal(size=(EXITS, n, CLASSES))
    for k in range(EXITS):
        logits[k, np.arange(n), labels] += (1.0 + k) * 1.5 * ease
    confidences = 1.0 / (1.0 + np.exp(-logits.max(-1) + logits.mean(-1) + 1.0))
    return logits.astype(np.float32), labels, confidences.astype(np.float32)


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--points", type=int, default=20)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    logits, labels, conf = synthetic(args.samples)
    costs = np.cumsum(np.linspace(1.0, 2.0, EXITS))
    ref = float(costs[-1])  # synthetic: the "unsplit model" costs what the last exit does
    half = Budget("macs_fraction", 0.5)
    cases = {
        "fractions (50 % MACs)": lambda: calibrate_fractions(logits, labels, costs, half, reference_cost=ref),
        "search (50 % MACs)": lambda: calibrate_search(logits, labels, costs, half, reference_cost=ref),
        "search (no constraint)": lambda: calibrate_search(logits, labels, costs, Budget("macs_fraction", 1.0),
                                                           reference_cost=ref),
        "fixed (h >= 0.5)": lambda: calibrate_fixed(logits, labels, costs, reference_cost=ref, confidences=conf),
        "gater (P >= 0.5)": lambda: calibrate_gater(logits, labels, costs, reference_cost=ref, confidences=conf),
        f"curve: fractions x {args.points}": lambda: budget_curve(logits, labels, costs, reference_cost=ref,
                                                                  policy="fractions", n_points=args.points),
        f"curve: search x {args.points}": lambda: budget_curve(logits, labels, costs, reference_cost=ref,
                                                               policy="search", n_points=args.points),
    }
    print(f"{EXITS} exits x {args.samples} samples x {CLASSES} classes, {args.repeats} repeats")
    for name, fn in cases.items():
        times = timed(fn, args.repeats)
        print(f"  {name:26s} median {1e3 * statistics.median(times):8.1f} ms   "
              f"min {1e3 * min(times):8.1f}   max {1e3 * max(times):8.1f}")


if __name__ == "__main__":
    main()
