"""Speed of the AEP exhaustive subset search: all 127 subsets of 7 exits over 10,000 samples x 10 classes.

Random logits (the accuracy does not matter, the work is the same). Prints the median and the spread
(min / max) over repeats for each weight mode. Goal: well under one second.

    .venv/bin/python tools/bench/prune_speed.py [--exits 7] [--samples 10000] [--classes 10] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from edgeexit.aep import AEP_MODES
from edgeexit.prune import prune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=7)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(args.exits, args.samples, args.classes)).astype(np.float32)
    labels = rng.integers(0, args.classes, args.samples)
    ones = np.ones(args.exits)
    costs = dict(segment_params=ones, head_params=ones, segment_macs=ones, head_macs=ones)
    print(f"{2 ** args.exits - 1} subsets x {args.samples} samples x {args.classes} classes, {args.repeats} repeats")
    for mode in AEP_MODES:
        prune(logits, labels, mode=mode, **costs)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            prune(logits, labels, mode=mode, **costs)
            times.append(time.perf_counter() - start)
        print(f"  {mode:5s} median {1e3 * statistics.median(times):7.1f} ms   "
              f"min {1e3 * min(times):7.1f}   max {1e3 * max(times):7.1f}")


if __name__ == "__main__":
    main()
