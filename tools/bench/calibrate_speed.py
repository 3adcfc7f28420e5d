"""Speed of threshold calibration on one thread: a 39-budget sweep over 7 exits with 10,000 validation and 10,000
test samples (calibrate on validation at each budget, then replay the thresholds on test), per budgeted policy, and
every policy once at 50 %.

Synthetic per-exit outputs (later exits stronger, samples of varying difficulty); the work does not depend on the
accuracy. Timed by edgeexit.timing's rules in this one process, BLAS and OpenMP pools held to one thread: warm-up,
rotated rounds, the first case timed twice as the null test. Printed: median ms, IQR, the null test.
Goal: <= 0.35 s for the sweep.

    python tools/bench/calibrate_speed.py [--samples 10000] [--budgets 39] [--rounds 7]
    python tools/bench/calibrate_speed.py --quick
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

EXITS, CLASSES = 7, 10
GOAL_S = 0.35


def synthetic(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    ease = rng.uniform(size=n)
    logits = rng.normal(size=(EXITS, n, CLASSES))
    for k in range(EXITS):
        logits[k, np.arange(n), labels] += (1.0 + k) * 1.5 * ease
    confidences = 1.0 / (1.0 + np.exp(-logits.max(-1) + logits.mean(-1) + 1.0))
    return logits.astype(np.float32), labels, confidences.astype(np.float32)


def sweep(policy: str, val, test, costs, budgets) -> list[float]:
    """Calibrate on `val` at every budget, replay on `test`: the test accuracy of each point. Both splits are scored
    once (score_outputs), as `budget_curve` does: what a budget changes is the thresholds, not the scores."""
    from edgeexit.calibrate import Budget, calibrate, exit_scores, score_outputs, simulate

    (lv, yv, _), (lt, yt, _) = val, test
    scores, preds, ref = exit_scores(lt, "max_softmax"), lt.argmax(-1), float(costs[-1])
    scored = score_outputs(lv, yv)
    out = []
    for b in budgets:
        cal = calibrate(scored, yv, costs, Budget("macs_fraction", float(b)), reference_cost=ref, policy=policy)
        out.append(simulate(scores, preds, yt, np.asarray(cal.thresholds, np.float64), costs).accuracy)
    return out


def main() -> None:
    from threadpoolctl import threadpool_limits

    from edgeexit.calibrate import calibrate_fixed, calibrate_gater
    from edgeexit.timing import measure

    p = suite.parser(__doc__, "calibrate_speed")
    p.add_argument("--samples", type=int, default=10000, help="validation samples, and as many test samples")
    p.add_argument("--budgets", type=int, default=39)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    if a.quick:
        a.samples, a.budgets, a.rounds = 500, 5, 3
    warnings.simplefilter("ignore")
    val, test = synthetic(a.samples, 0), synthetic(a.samples, 1)
    costs = np.cumsum(np.linspace(1.0, 2.0, EXITS))
    # budgets spread over what a deployment can spend: from the first exit's share of the MACs (9.5 % here; below it
    # no calibration exists and the policies refuse) to the whole network
    lo = float(costs[0] / costs[-1])
    budgets = lo + (1.0 - lo) * np.arange(1, a.budgets + 1) / (a.budgets + 1)
    lv, yv, cv = val
    ref = float(costs[-1])
    cases = {
        "full": lambda: sweep("fractions", val, test, costs, budgets),
        "search sweep": lambda: sweep("search", val, test, costs, budgets),
        "fixed (h >= 0.5), once": lambda: calibrate_fixed(lv, yv, costs, reference_cost=ref, confidences=cv),
        "gater (P >= 0.5), once": lambda: calibrate_gater(lv, yv, costs, reference_cost=ref, confidences=cv),
    }
    label = {"full": "fractions sweep", "full_repeat": "fractions sweep (null test)"}
    with threadpool_limits(1):
        m = measure(cases, rounds=a.rounds, warmup=1, prime=0, setup={"threads": 1})
    ratio = m.ratio("full_repeat")
    def goal(n: str) -> str:
        return "-" if "sweep" not in label.get(n, n) else "yes" if m.stats(n)["p50_ms"] <= 1e3 * GOAL_S else "no"

    rows = [[label.get(n, n), f"{m.stats(n)['p50_ms']:.1f}", f"{m.stats(n)['p25_ms']:.1f}-{m.stats(n)['p75_ms']:.1f}",
             goal(n)] for n in m.times]
    suite.table(f"calibration, {EXITS} exits, {a.samples} val + {a.samples} test samples, {a.budgets} budgets, "
                "1 thread",
                ["case", "median ms", "IQR ms", f"<= {GOAL_S} s"], rows,
                note=f"null test {ratio['null_ratio']:.3f} (noise {100 * ratio['noise']:.1f} %"
                     f"{', NOISY' if ratio['noisy'] else ''})")
    suite.write_json(a.json, {"samples": a.samples, "budgets": a.budgets, "goal_s": GOAL_S,
                              "measurement": m.to_json(), "null": ratio})


if __name__ == "__main__":
    main()
