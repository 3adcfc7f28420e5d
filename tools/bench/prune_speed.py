"""Speed of the AEP exhaustive subset search on one thread: all 127 subsets of 7 exits over 10,000 samples x 10
classes, for each weight mode.

Random logits (the accuracy does not matter, the work is the same). Timed by edgeexit.timing's rules in this one
process, BLAS and OpenMP pools held to one thread: warm-up, rotated rounds, the first mode timed twice as the null
test. Printed: median ms, IQR, the null test. Goal: well under one second.

    python tools/bench/prune_speed.py [--exits 7] [--samples 10000] [--classes 10] [--rounds 7]
    python tools/bench/prune_speed.py --quick
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

GOAL_S = 1.0


def main() -> None:
    from threadpoolctl import threadpool_limits

    from edgeexit.aep import AEP_MODES
    from edgeexit.prune import prune
    from edgeexit.timing import FULL, measure

    p = suite.parser(__doc__, "prune_speed")
    p.add_argument("--exits", type=int, default=7)
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    if a.quick:
        a.exits, a.samples, a.rounds = 4, 500, 3
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(a.exits, a.samples, a.classes)).astype(np.float32)
    labels = rng.integers(0, a.classes, a.samples)
    ones = np.ones(a.exits)
    costs = dict(segment_params=ones, head_params=ones, segment_macs=ones, head_macs=ones)
    modes = list(AEP_MODES)
    cases = {FULL if i == 0 else mode: (lambda mode=mode: prune(logits, labels, mode=mode, **costs))
             for i, mode in enumerate(modes)}
    with threadpool_limits(1):
        m = measure(cases, rounds=a.rounds, warmup=1, prime=0, setup={"threads": 1})
    null = m.ratio("full_repeat")
    label = {FULL: modes[0], "full_repeat": f"{modes[0]} (null test)"}
    rows = [[label.get(n, n), f"{m.stats(n)['p50_ms']:.1f}", f"{m.stats(n)['p25_ms']:.1f}-{m.stats(n)['p75_ms']:.1f}",
             "yes" if m.stats(n)["p50_ms"] <= 1e3 * GOAL_S else "no"] for n in m.times]
    suite.table(f"AEP pruning: {2 ** a.exits - 1} subsets x {a.samples} samples x {a.classes} classes, 1 thread",
                ["mode", "median ms", "IQR ms", f"<= {GOAL_S:g} s"], rows,
                note=f"null test {null['null_ratio']:.3f} (noise {100 * null['noise']:.1f} %"
                     f"{', NOISY' if null['noisy'] else ''})")
    suite.write_json(a.json, {"exits": a.exits, "samples": a.samples, "classes": a.classes, "goal_s": GOAL_S,
                              "measurement": m.to_json(), "null": null})


if __name__ == "__main__":
    main()
