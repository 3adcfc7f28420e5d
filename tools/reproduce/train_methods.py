"""Short training runs of every method on Fashion-MNIST: AEP in its four weight modes (papers/000), EENet at two λ
(papers/002) and the budget-aware gater (papers/003), each with `edgeexit.pipeline.train_stage` as `edgeexit train`
runs it. Prints one table and writes JSON with, per run:

- per-exit test accuracy (every exit on its own; for AEP also the ensemble argmax Σβ_i·O_i, Eq. 3),
- for EENet the exit rule h ≥ T = 0.5 and for the gater P_k ≥ 0.5 on the test split: accuracy and mean MACs as a
  fraction of the unsplit model (the calibration policies "fixed" and "gater", i.e. what the runtime does),
- training seconds per epoch.

    .venv/bin/python tools/reproduce/train_methods.py --backbone cifar_resnet20 --limit-train 3000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgeexit.calibrate import policies
from edgeexit.models import ModelConfig
from edgeexit.models.costs import count_costs
from edgeexit.outputs import collect_outputs
from edgeexit.pipeline import (
    DataConfig,
    gater_scores,
    load_trained,
    reference_macs,
    train_stage,
)
from edgeexit.rundir import RunDir
from edgeexit.train.losses import aep_predict
from edgeexit.train.trainer import TrainConfig


def runs(args) -> list[tuple[str, ModelConfig, TrainConfig]]:
    """(name, model, training) of every run: AEP per mode, EENet per λ, the budget-aware gater."""
    common = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
              "device": args.device, "max_steps_per_epoch": args.max_steps}
    out = []
    for mode in args.aep_modes.split(","):
        out.append((f"aep-{mode}", ModelConfig(backbone=args.backbone, exits=args.aep_exits, head="aep"),
                    TrainConfig(method="aep", weight_mode=mode, **common)))
    for lam in (float(v) for v in args.eenet_lams.split(",")):
        out.append((f"eenet-lam{lam:g}", ModelConfig(backbone=args.backbone, exits=args.eenet_exits, head="pool"),
                    TrainConfig(method="eenet", lam=lam, **common)))
    out.append((f"budget-lam{args.budget_lam:g}",
                ModelConfig(backbone=args.backbone, exits=args.aep_exits, head="aep",
                            gater_features=("confidence", "entropy")),
                TrainConfig(method="budget", lam=args.budget_lam, gater_period=args.gater_period, **common)))
    return out


def test_figures(run_dir: Path, cfg: TrainConfig, limit: int | None) -> dict:
    """Per-exit test accuracy, and for the confidence / gater methods what the exit rule at 0.5 reaches."""
    net, model, spec, data = load_trained(run_dir / "checkpoint.pt")
    outs = collect_outputs(net, data.load(spec.channels).test, limit=limit)
    costs = count_costs(net, spec.channels, spec.height)
    reference = float(reference_macs(run_dir / "checkpoint.pt"))  # the unsplit model's MACs
    figures = {"exit_names": net.exit_names, "exit_accuracy": outs.exit_accuracy,
               "exit_macs_fraction": costs.macs_fraction, "test_samples": int(len(outs.labels))}
    if cfg.method == "aep":
        pred = aep_predict([torch.from_numpy(l) for l in outs.logits], cfg.weight_mode).numpy()
        figures["ensemble_accuracy"] = float((pred == outs.labels).mean())
    rule = None
    if cfg.method == "eenet":  # EENets exit when the confidence branch says h >= T = 0.5 (papers/002, Sec. 3.2)
        rule = policies.calibrate_fixed(outs.logits, outs.labels, costs.cumulative_macs, reference_cost=reference,
                                        confidences=outs.confidences, threshold=0.5)
    elif cfg.method == "budget":  # the gater's P_k >= 0.5 (papers/003)
        rule = policies.calibrate_gater(outs.logits, outs.labels, costs.cumulative_macs, reference_cost=reference,
                                        confidences=gater_scores(net, outs.logits))
    if rule is not None:
        # MACs as a fraction of the unsplit model, as `edgeexit eval` reports them (earlier heads included)
        figures.update(early_exit_accuracy=rule.accuracy, macs_fraction=rule.cost_fraction,
                       exit_fractions=list(rule.exit_fractions))
    return figures


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="cifar_resnet20")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam; 1e-3 as EENets on MNIST (AEP's 1e-4 is for 100 epochs)")
    p.add_argument("--limit-train", type=int, default=3000)
    p.add_argument("--limit-val", type=int, default=1000)
    p.add_argument("--limit-test", type=int, default=2000)
    p.add_argument("--aep-modes", default="desc,asc,mix,unif")
    p.add_argument("--aep-exits", default="stages", help="placement of the AEP and budget runs")
    p.add_argument("--eenet-exits", default="eenet:pareto:3", help="placement of the EENet runs")
    p.add_argument("--eenet-lams", default="0.5,2", help="two (or more) λ of L_v2")
    p.add_argument("--budget-lam", type=float, default=2.0)
    p.add_argument("--gater-period", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path("runs/repro_train_methods"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    console = Console(width=150)  # the table is wide; also when the output is a file
    data = DataConfig("fashion-mnist", image_size=args.image_size, seed=args.seed, limit_train=args.limit_train,
                      limit_val=args.limit_val, limit_test=args.limit_test)
    results, t0 = [], time.time()
    for name, model, cfg in runs(args):
        console.rule(f"[bold]{name}")
        result = train_stage(RunDir(args.out / name), data, model, cfg, progress=True)
        figures = test_figures(args.out / name, cfg, args.limit_test)
        results.append({"run": name, "method": cfg.method, "weight_mode": cfg.weight_mode if cfg.method == "aep" else None,
                        "lam": cfg.lam, "exits": model.exits, "head": model.head,
                        "epoch_seconds": [h["seconds"] for h in result.history],
                        "val_exit_accuracy": result.val_exit_accuracy, **figures})

    report = {"backbone": args.backbone, "dataset": asdict(data), "train": {k: v for k, v in vars(args).items() if k != "out"},
              "torch": torch.__version__, "threads": torch.get_num_threads(), "total_seconds": time.time() - t0,
              "runs": results}
    report["train"]["out"] = str(args.out)
    table = Table(title=f"{args.backbone} on Fashion-MNIST ({args.limit_train} train / {args.limit_test} test, "
                        f"{args.epochs} epoch(s))")
    for col in ("run", "exits", "test acc per exit", "ensemble", "exit rule 0.5: acc", "MACs frac", "s / epoch"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(r["run"], ", ".join(r["exit_names"]), " ".join(f"{a:.3f}" for a in r["exit_accuracy"]),
                      f"{r['ensemble_accuracy']:.3f}" if "ensemble_accuracy" in r else "",
                      f"{r['early_exit_accuracy']:.3f}" if "early_exit_accuracy" in r else "",
                      f"{r['macs_fraction']:.3f}" if "macs_fraction" in r else "",
                      f"{np.mean(r['epoch_seconds']):.1f}")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_methods.json").write_text(json.dumps(report, indent=2))
    console.print(json.dumps({r["run"]: {k: r[k] for k in ("exit_accuracy", "macs_fraction", "epoch_seconds") if k in r}
                              for r in results}, indent=None))
    console.print(f"JSON: {args.out / 'train_methods.json'}  total {report['total_seconds']:.0f} s")
    return report


if __name__ == "__main__":
    main()
