"""Reproduce the prune / calibrate figures on a trained run: AEP pruning in every weight mode, and the
budgeted-batch operating points at 30 / 50 / 70 % of the full MACs, calibrated on validation and checked on
the test split.

    .venv/bin/python tools/reproduce/prune_budgets.py --run-dir runs/default [--out DIR]
Writes OUT/repro_prune_budgets.json and OUT/repro_budgets.png (OUT: the run directory unless --out names another).
Every cost fraction is of the unsplit model's MACs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgeexit import jsonio
from edgeexit.aep import aep_weights
from edgeexit.calibrate import (
    Budget,
    anytime_curve,
    budget_curve,
    calibrate,
    exit_scores,
    plot_curves,
    simulate,
)
from edgeexit.models.costs import count_costs
from edgeexit.outputs import collect_outputs
from edgeexit.pipeline import load_trained, reference_macs
from edgeexit.prune import prune


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, default=Path("runs/default"))
    p.add_argument("--budgets", default="0.3,0.5,0.7")
    p.add_argument("--modes", default="desc,asc,mix,unif")
    p.add_argument("--out", type=Path, default=None, help="where to write the JSON and PNG (default: the run directory)")
    args = p.parse_args()
    out_dir = args.out or args.run_dir
    console = Console(width=150)
    net, cfg, spec, data = load_trained(args.run_dir / "checkpoint.pt")
    reference = float(reference_macs(args.run_dir / "checkpoint.pt"))  # the unsplit model: every fraction's yardstick
    splits = data.load(spec.channels)
    val, test = collect_outputs(net, splits.val), collect_outputs(net, splits.test)
    c = count_costs(net, spec.channels, spec.height)
    out: dict = {"backbone": cfg.backbone, "exit_names": net.exit_names, "val_exit_accuracy": val.exit_accuracy,
                 "test_exit_accuracy": test.exit_accuracy, "prune": {}, "budgets": []}

    t = Table(title=f"AEP pruning of {cfg.backbone} ({len(val.labels)} val / {len(test.labels)} test samples)")
    for col in ("mode", "kept exits", "val acc (all exits)", "val acc (kept)", "test acc (all)", "test acc (kept)",
                "params", "MACs"):
        t.add_column(col, justify="right")
    for mode in args.modes.split(","):
        r = prune(val.logits, val.labels, mode=mode, segment_params=c.segment_params, head_params=c.head_params,
                  segment_macs=c.segment_macs, head_macs=c.head_macs)
        beta_all = aep_weights(net.num_exits, mode, "output")
        test_all = float((np.tensordot(beta_all, test.logits, 1).argmax(-1) == test.labels).mean())
        test_kept = float((np.tensordot(np.asarray(r.weights), test.logits[r.kept_exits], 1).argmax(-1) == test.labels).mean())
        out["prune"][mode] = {**r.to_dict(), "test_accuracy_all": test_all, "test_accuracy_kept": test_kept}
        out["prune"][mode].pop("subsets")
        t.add_row(mode, str(r.kept_exits), f"{r.full['accuracy']:.4f}", f"{r.accuracy:.4f}", f"{test_all:.4f}",
                  f"{test_kept:.4f}", f"{r.params / r.full['params']:.3f}x", f"{r.macs / r.full['macs']:.3f}x")
    console.print(t)

    costs = c.cumulative_macs
    b = Table(title="budgeted batch (search policy, max softmax): calibrated on val, measured on test")
    for col in ("budget (MACs)", "val accuracy", "val cost", "test accuracy", "test cost", "exit fractions (test)"):
        b.add_column(col, justify="right")
    points = []
    test_scores = exit_scores(test.logits, "max_softmax")
    for fraction in (float(f) for f in args.budgets.split(",")):
        cal = calibrate(val.logits, val.labels, costs, Budget("macs_fraction", fraction), reference_cost=reference,
                        policy="search")
        sim = simulate(test_scores, test.logits.argmax(-1), test.labels, np.array(cal.thresholds), np.array(cal.costs))
        points.append(cal)
        row = {"budget": fraction, "val_accuracy": cal.accuracy, "val_cost_fraction": cal.cost_fraction,
               "test_accuracy": float(sim.accuracy), "test_cost_fraction": float(sim.mean_cost / reference),
               "test_exit_fractions": [float(f) for f in sim.exit_fractions], "thresholds": cal.thresholds}
        out["budgets"].append(row)
        b.add_row(f"{fraction:.0%}", f"{cal.accuracy:.4f}", f"{cal.cost_fraction:.3f}", f"{sim.accuracy:.4f}",
                  f"{row['test_cost_fraction']:.3f}", " / ".join(f"{f:.2f}" for f in sim.exit_fractions))
    console.print(b)
    console.print(f"final exit alone on test: {test.exit_accuracy[-1]:.4f}")
    anytime = anytime_curve(val.logits, val.labels, costs, reference_cost=reference)
    budgeted = budget_curve(val.logits, val.labels, costs, reference_cost=reference, policy="search")
    png = plot_curves(out_dir / "repro_budgets.png", reference_cost=reference, anytime=anytime, budgeted=budgeted,
                      operating_point=points, title=f"{cfg.backbone} on Fashion-MNIST: budgeted batch (val)")
    jsonio.write_json(out_dir / "repro_prune_budgets.json", {**out, "anytime": anytime, "budgeted": budgeted})
    console.print(f"-> {png}, {out_dir / 'repro_prune_budgets.json'}")


if __name__ == "__main__":
    main()
