"""Realisation (time saving / MAC saving) at 30 / 50 / 70 % MAC budgets per backend, and the batch-64 throughput of
the early-exit runtime (with compaction) against the unsplit model at 50 %.

For each budget the thresholds are chosen again on the validation split from the bundle's own exit outputs on that
backend (the `search` policy); then, in one process per (bundle, backend) and by edgeexit.timing's rules, the unsplit
model and the early-exit runtime at every budget each make one pass over the same test images per round (rotated
rounds, the unsplit model twice as the null test). Printed per budget and batch: both accuracies, the mean MACs
fraction, the time ratio and realisation = (1 - time ratio) / (1 - MACs fraction): 1.0 means every MAC saved is
time saved. Throughput = 1 / time ratio at the largest batch (64 on cpu). Goals: realisation >= 1.0 on onnxruntime
and ExecuTorch; throughput >= 1.6x at batch 64 and 50 %.

    python tools/bench/realisation.py --bundle runs/default/bundle
    python tools/bench/realisation.py --checkpoint runs/default/checkpoint.pt     # cpu and android fp32 bundles
    python tools/bench/realisation.py --quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

QUICK_BACKENDS = ["onnxruntime"]

TARGETS = [("cpu", None), ("android", "fp32")]


def worker(p: dict) -> dict:
    from edgeexit.calibrate import Budget, policies
    from edgeexit.pipeline import test_split
    from edgeexit.timing import measure

    b, rt, setup = suite.open_runtime(p["bundle"], p["backend"], p["threads"])
    m = b.manifest
    full = rt.reference()
    xv, yv = test_split(b, "val", p["val_samples"])
    outs = rt.exit_outputs(xv)
    logits = np.stack([o["logits"] for o in outs]).astype(np.float32)
    scores = np.stack([o["score"] for o in outs]).astype(np.float32)
    cum = np.array([e.cumulative_macs for e in b.exits], dtype=np.float64)
    x, y = test_split(b, "test", p["samples"])
    acc_full = float((full.run(x).argmax(1) == y).mean())
    runtimes, budgets = {}, []
    for budget in p["budgets"]:
        cal = policies.calibrate(logits, yv, cum, Budget("macs_fraction", budget), policy="search",
                                 reference_cost=float(m.full_macs), confidences=scores, kind=m.exits[0].score)
        ee = rt.with_thresholds([None if t == np.inf else float(t) for t in cal.thresholds[:-1]] + [None])
        res = ee.run(x)
        runtimes[f"budget{budget}"] = ee
        budgets.append({"budget": budget, "accuracy_early_exit": float((res.predictions == y).mean()),
                        "macs_fraction": float(cum[res.exit_index].mean() / m.full_macs),
                        "exit_histogram": res.exit_histogram(rt.num_exits)})
    rows = []
    for batch in p["batches"]:
        entries = {"full": suite.passes(full.run, x, batch)}
        entries.update({name: suite.passes(ee.run, x, batch) for name, ee in runtimes.items()})
        meas = measure(entries, rounds=p["rounds"], warmup=1, prime=0, setup={**setup, "batch": batch})
        for row in budgets:
            r = meas.ratio(f"budget{row['budget']}")
            macs = row["macs_fraction"]
            rows.append({**row, "batch": batch, "time": r, "throughput": 1 / r["ratio"],
                         "realisation": (1 - r["ratio"]) / (1 - macs) if macs < 1 else None})
        rows[-1]["measurement"] = meas.to_json()
    return {"bundle": str(p["bundle"]), "backend": setup["backend"], "accuracy_full": acc_full, "rows": rows}


def main() -> None:
    from early_exit import plan

    p = suite.parser(__doc__, "realisation")
    p.add_argument("--bundle", type=Path, action="append", help="a bundle (repeat for several)")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint to export the cpu and android bundles from")
    p.add_argument("--backends", help="comma-separated (default: every backend here that runs each bundle)")
    p.add_argument("--budgets", default="0.3,0.5,0.7")
    p.add_argument("--batches", default=None, help="default: 1 and each bundle's largest (at most 64)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--samples", type=int, default=1000, help="test images in every pass")
    p.add_argument("--val-samples", type=int, default=5000, help="validation images the thresholds are chosen on")
    a = p.parse_args()
    if a.worker:
        suite.answer(worker(json.loads(a.worker)))
        return
    from edgeexit.bundle import load_bundle

    if a.quick:
        a.rounds, a.samples, a.val_samples = min(a.rounds, 3), min(a.samples, 64), min(a.val_samples, 128)
    results = []
    if a.quick and not a.backends:  # one code path per backend family is enough to show the script runs
        a.backends = ",".join(QUICK_BACKENDS)
    for path, backend in plan(suite.bundles(a, TARGETS), a.backends.split(",") if a.backends else None):
        batches = [int(v) for v in a.batches.split(",")] if a.batches else \
            sorted({1, min(64, load_bundle(path).manifest.batch.max)})
        results.append(suite.in_worker(__file__, {
            "bundle": str(path), "backend": backend, "threads": a.threads, "rounds": a.rounds, "samples": a.samples,
            "val_samples": a.val_samples, "budgets": [float(v) for v in a.budgets.split(",")], "batches": batches}))
    rows = [[r["backend"], f"{row['budget']:.2f}", row["batch"], f"{100 * r['accuracy_full']:.2f}",
             f"{100 * row['accuracy_early_exit']:.2f}", row["macs_fraction"], *suite.ratio_cells(row["time"]),
             row["realisation"], f"{row['throughput']:.2f}x"] for r in results for row in r["rows"]]
    suite.table("realisation: (1 - time ratio) / (1 - MACs fraction)",
                ["backend", "budget", "batch", "acc full %", "acc early exit %", "MACs fraction",
                 *suite.RATIO_COLUMNS, "realisation", "throughput"], rows,
                note="goals: realisation >= 1.0 (onnxruntime, ExecuTorch); throughput >= 1.6x at batch 64, budget 0.50")
    suite.write_json(a.json, {"results": results})


if __name__ == "__main__":
    main()
