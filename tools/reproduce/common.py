"""What the reproductions share: the scale options (and what `--quick` shrinks them to), the per-exit outputs of a
trained checkpoint on validation and test, accuracy-vs-cost points calibrated on validation and measured on test,
and the writer of JSON + markdown.

Every cost fraction is of the unsplit model's MACs (`edgeexit.pipeline.reference_macs`), as `edgeexit eval`
reports them: answering at exit k costs every segment up to k and every head up to k.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgeexit.calibrate import Budget, calibrate, exit_scores, simulate
from edgeexit.jsonio import write_atomic
from edgeexit.models import ModelConfig
from edgeexit.models.costs import ExitCosts, count_costs
from edgeexit.outputs import ExitOutputs, collect_outputs
from edgeexit.pipeline import DataConfig, load_trained, reference_macs, train_stage
from edgeexit.rundir import RunDir
from edgeexit.train.checkpoint import load_checkpoint
from edgeexit.train.trainer import TrainConfig

BUDGETS = (0.3, 0.5, 0.7)
# budgets swept to find the smallest MAC fraction within 1 pt of the full model (calibrated on val, checked on test)
SWEEP = tuple(round(float(f), 3) for f in np.arange(0.05, 1.0001, 0.025))
# --quick: a tiny CNN on the synthetic task, a few hundred samples, one epoch: seconds, only to check the script runs
QUICK = {"dataset": "synthetic", "image_size": 16, "limit_train": 512, "limit_val": 128, "limit_test": 128,
         "epochs": 2, "max_steps": None}


def add_scale(p: argparse.ArgumentParser, *, epochs: int = 3, limit_train: int | None = 10000,
              limit_val: int | None = 2000, limit_test: int | None = 5000) -> None:
    """The options that set a reproduction's scale; the defaults are what its docstring times."""
    p.add_argument("--epochs", type=int, default=epochs, help="training epochs of every run (the same for all)")
    p.add_argument("--limit-train", type=int, default=limit_train, help="first N training images (0: all 51,000)")
    p.add_argument("--limit-val", type=int, default=limit_val, help="first N validation images (0: all 9,000)")
    p.add_argument("--limit-test", type=int, default=limit_test, help="first N test images (0: all 10,000)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--max-steps", type=int, default=None, help="cap on steps per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam, cosine-annealed to 0 (edgeexit build's defaults)")
    p.add_argument("--seed", type=int, default=0, help="the same seed for every run")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="run directories, JSON and markdown go here")
    p.add_argument("--quick", action="store_true", help="a tiny model on synthetic data for a few steps (seconds): "
                                                        "checks the script, measures nothing")


def apply_quick(args: argparse.Namespace, **backbones: str) -> argparse.Namespace:
    """With --quick: the QUICK scale, and `tiny_cnn` for every backbone option named in `backbones`
    (option name -> the value to use, e.g. exits="eenet:pareto:2")."""
    args.dataset = "fashion-mnist"
    for k in ("limit_train", "limit_val", "limit_test"):
        if getattr(args, k) == 0:
            setattr(args, k, None)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
        for k, v in backbones.items():
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    return args


def data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(args.dataset, image_size=args.image_size, seed=args.seed, limit_train=args.limit_train,
                      limit_val=args.limit_val, limit_test=args.limit_test)


def train_run(args: argparse.Namespace, name: str, model: ModelConfig, **train: object) -> RunDir:
    """Train `model` into OUT/NAME with `edgeexit.pipeline.train_stage` at the script's scale: the options every run
    of a script shares (epochs, batch, Adam lr cosine-annealed, seed, CPU), and `train`'s own (method, weights, ...)."""
    run = RunDir(args.out / name)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule="cosine", seed=args.seed,
                      max_steps_per_epoch=args.max_steps, device="cpu", **train)
    t0 = time.time()
    train_stage(run, data_config(args), model, cfg, progress=False)
    print(f"== {name}: trained in {time.time() - t0:.0f} s", flush=True)
    return run


def print_table(title: str, header: list[str], rows: list[list[str]], *, caption: str | None = None,
                width: int = 200) -> None:
    table = Table(title=title, caption=caption)
    for col in header:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    Console(width=width).print(table)


def scale_text(args: argparse.Namespace) -> str:
    """What was reduced, in words, for every printed table."""
    n = lambda v, full: f"{v:,}" if v else f"all {full:,}"  # noqa: E731
    if args.quick:
        return (f"--quick: tiny_cnn on the synthetic task, {args.limit_train} train / {args.limit_test} test samples, "
                f"{args.image_size} px, {args.epochs} epochs: checks the script, measures nothing")
    return (f"Fashion-MNIST at {args.image_size} px (papers: 64 / 224 px or 32 px CIFAR), {n(args.limit_train, 51000)} "
            f"train / {n(args.limit_val, 9000)} val / {n(args.limit_test, 10000)} test images, {args.epochs} epoch(s) "
            f"(papers: 20-100), Adam {args.lr:g} cosine, batch {args.batch_size}, seed {args.seed}")


@dataclass
class Trained:
    """A trained checkpoint's per-exit outputs on validation and test, its costs and the unsplit model's MACs."""

    net: torch.nn.Module
    val: ExitOutputs
    test: ExitOutputs
    costs: ExitCosts
    reference: float
    train_config: dict
    data: DataConfig
    model: ModelConfig


def load_outputs(checkpoint: Path, *, limit_val: int | None = None, limit_test: int | None = None) -> Trained:
    """Run every exit of the checkpoint over its own validation and test splits (as recorded in the checkpoint)."""
    ckpt = load_checkpoint(checkpoint)
    net, model, spec, data = load_trained(checkpoint)
    splits = data.load(spec.channels)
    return Trained(net, collect_outputs(net, splits.val, limit=limit_val), collect_outputs(net, splits.test, limit=limit_test),
                   count_costs(net, spec.channels, spec.height), float(reference_macs(ckpt)),
                   dict(ckpt.get("train_config") or {}), data, model)


def operating_point(t: Trained, fraction: float, *, policy: str = "search", kind: str = "max_softmax",
                    val_scores: np.ndarray | None = None, test_scores: np.ndarray | None = None) -> dict:
    """Thresholds for `fraction` of the unsplit model's MACs calibrated on validation (`policy`, score `kind`; the
    scores [E, N] themselves for kinds computed outside the logits, e.g. the gater's), and what they give on test."""
    options: dict = {"kind": kind}
    if val_scores is not None:
        options["confidences"] = val_scores
    costs = t.costs.cumulative_macs
    cal = calibrate(t.val.logits, t.val.labels, costs, Budget("macs_fraction", fraction), reference_cost=t.reference,
                    policy=policy, **options)
    scores = test_scores if test_scores is not None else exit_scores(t.test.logits, kind)
    sim = simulate(scores, t.test.logits.argmax(-1), t.test.labels, np.array(cal.thresholds), np.array(cal.costs))
    return {"budget": fraction, "val_accuracy": float(cal.accuracy), "val_cost_fraction": float(cal.cost_fraction),
            "test_accuracy": float(sim.accuracy), "test_cost_fraction": float(sim.mean_cost / t.reference),
            "test_exit_fractions": [float(f) for f in sim.exit_fractions]}


def accuracy_cost(t: Trained, budgets=BUDGETS, *, within: float = 0.01) -> dict:
    """The accuracy-vs-cost figures of one trained network: per-exit test accuracy, the operating points at
    `budgets`, and the smallest swept budget whose test accuracy is within `within` of the full model's."""
    full = float(t.test.exit_accuracy[-1])
    cheapest = t.costs.cumulative_macs[0] / t.reference  # every sample at the first exit: no budget below it
    points = [operating_point(t, f) if f >= cheapest else {"budget": f, "unreachable": True, "test_accuracy": None,
                                                            "test_cost_fraction": None} for f in budgets]
    need = None
    for f in (f for f in SWEEP if f >= cheapest):  # increasing: the first that reaches full - within is the answer
        p = operating_point(t, f)
        if p["test_accuracy"] >= full - within - 1e-12:
            need = p
            break
    return {"exit_names": list(t.net.exit_names), "val_exit_accuracy": [float(a) for a in t.val.exit_accuracy],
            "test_exit_accuracy": [float(a) for a in t.test.exit_accuracy],
            "exit_macs_fraction": [float(f) for f in t.costs.macs_fraction], "full_test_accuracy": full,
            "val_samples": int(len(t.val.labels)), "test_samples": int(len(t.test.labels)),
            "points": points, "within_1pt": need}


def point_text(p: dict) -> str:
    """'accuracy (cost %)' of an operating point, or why there is none."""
    if p.get("unreachable"):
        return "below exit 1's cost"
    return f"{pct(p['test_accuracy'], 2)} ({pct(p['test_cost_fraction'])} %)"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *rows])


def pct(v: float | None, digits: int = 1) -> str:
    return "" if v is None else f"{100 * v:.{digits}f}"


def write(out: Path, stem: str, report: dict, markdown: str) -> None:
    """OUT/STEM.json and OUT/STEM.md, each written whole (edgeexit.jsonio.write_atomic), never half."""
    report = {**report, "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for path, text in ((out / f"{stem}.json", json.dumps(report, indent=2, default=_plain)),
                       (out / f"{stem}.md", markdown + f"\n\nCommand: `{report['command']}`\n")):
        write_atomic(path, text)
    print(f"-> {out / stem}.json, {out / stem}.md")


def _plain(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "__dataclass_fields__"):
        return asdict(v)
    raise TypeError(f"not JSON: {type(v)}")
