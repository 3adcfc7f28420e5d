"""Realisation ratio (latency saving / MAC saving) of a bundle at several MAC budgets, on one backend.

For each budget (fractions of the unsplit model's MACs) the thresholds are chosen again on the validation split
from the bundle's own exit scores on that backend (the `search` policy), then the early-exit runtime with those
thresholds and the unsplit model run the same test images, interleaved batch by batch in this one process
(median of `--repeats` calls per batch). Printed per budget and batch: accuracy of both, the mean MACs fraction, the
time fraction and realisation = (1 - time fraction) / (1 - MACs fraction); 1.0 means every MAC saved is time saved.

    .venv/bin/python tools/bench/realisation.py --bundle runs/default/bundle               # onnxruntime
    .venv/bin/python tools/bench/realisation.py --bundle runs/android/bundle --batches 1,8  # ExecuTorch
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    from edgeexit.bundle import load_bundle
    from edgeexit.calibrate import Budget, policies
    from edgeexit.measure import side_by_side
    from edgeexit.pipeline import test_split
    from edgeexit.runtime import REGISTRY, EarlyExitRuntime

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("runs/default/bundle"))
    p.add_argument("--backend", choices=list(REGISTRY), default=None)
    p.add_argument("--budgets", default="0.3,0.5,0.7")
    p.add_argument("--batches", default=None, help="default: 1 and the bundle's largest")
    p.add_argument("--samples", type=int, default=2000, help="test images timed per budget and batch")
    p.add_argument("--val-samples", type=int, default=5000, help="validation images the thresholds are chosen on")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()

    b = load_bundle(a.bundle)
    m = b.manifest
    batches = [int(s) for s in a.batches.split(",")] if a.batches else sorted({1, m.batch.max})
    rt = EarlyExitRuntime.open(b, a.backend)
    full = rt.reference()
    xv, yv = test_split(b, "val", a.val_samples)
    outs = rt.exit_outputs(xv)
    logits = np.stack([o["logits"] for o in outs]).astype(np.float32)
    scores = np.stack([o["score"] for o in outs]).astype(np.float32)
    cum = np.array([e.cumulative_macs for e in b.exits], dtype=np.float64)
    x, y = test_split(b, "test", a.samples)
    full_pred = full.run(x).argmax(1)
    rows = []
    for budget in (float(s) for s in a.budgets.split(",")):
        cal = policies.calibrate(logits, yv, cum, Budget("macs_fraction", budget), policy="search",
                                 reference_cost=float(m.full_macs), confidences=scores, kind=m.exits[0].score)
        ee = rt.with_thresholds([None if t == np.inf else float(t) for t in cal.thresholds[:-1]] + [None])  # +inf: never
        res = ee.run(x)
        macs = float(cum[res.exit_index].mean() / m.full_macs)
        for batch in batches:
            timing = side_by_side({"early_exit": ee.run, "full": full.run}, x, batch, repeats=a.repeats)
            t = timing.ratio("early_exit", "full")
            rows.append({"budget": budget, "batch": batch, "backend": rt.backend.name,
                         "accuracy_full": float((full_pred == y).mean()),
                         "accuracy_early_exit": float((res.predictions == y).mean()),
                         "macs_fraction": macs, "time_fraction": t,
                         "realisation": (1 - t) / (1 - macs) if macs < 1 else None,
                         "exit_histogram": res.exit_histogram(rt.num_exits)})
            r = rows[-1]
            print(f"budget {budget:.2f} batch {batch:3d} {r['backend']}: accuracy {100 * r['accuracy_early_exit']:.2f} % "
                  f"(full {100 * r['accuracy_full']:.2f} %), MACs {macs:.3f}x, time {t:.3f}x, realisation "
                  + ("-" if r["realisation"] is None else f"{r['realisation']:.2f}"), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
