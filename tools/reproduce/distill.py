"""Self-distillation and gradient equilibrium (issue 19; `--distill T,alpha`, `--gradient-equilibrium`, see
edgeexit/train/distill.py), and the exit head (`--heads aep,conv`: AEP's replicated classifier, MSDNet's two-conv
classifier): per-exit test accuracy and the accuracy-vs-cost curve with and without each option, same epochs, same
seed, same data, on the Fashion-MNIST ResNet-18 and the CIFAR-style ResNet-20.

For every run: each exit's test accuracy on its own; the test accuracy at 30 / 50 / 70 % of the unsplit model's
MACs (thresholds calibrated on validation with the search policy on max softmax, then applied to test); and the
smallest MAC fraction (swept in steps of 2.5 %) whose test accuracy is within 1 pt of the full model's. Every
figure is also given as the change against the first run (the baseline).

Two modes:

- train (default): every backbone x variant (baseline, distill, equilibrium, both) trained by
  `edgeexit.pipeline.train_stage` with `edgeexit build`'s defaults (exits after every stage, AEP heads, unif
  weights, Adam 1e-3 cosine, batch 64), at a reduced scale: 10,000 train / 2,000 val / 5,000 test images,
  3 epochs. About 13 min on 2 idle cores (8 runs; ResNet-18 ~105 s per run, ResNet-20 ~75 s).

      python tools/reproduce/distill.py --out runs/reproduce_distill

- read: `--runs NAME=DIR ...` reads the checkpoint.pt of existing runs (e.g. two full `edgeexit build`s) instead
  of training; the first is the baseline. The whole validation and test splits the runs were trained with are used
  (ResNet-18, 19,000 images per run: about 1-2 min per run on 2 idle cores).

      python tools/reproduce/distill.py --out runs/reproduce_distill_default \\
          --runs baseline=runs/default distill=runs/distill

Writes OUT/distill.json and OUT/distill.md. `--quick`: a tiny CNN on synthetic data, seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (BUDGETS, accuracy_cost, add_scale, apply_quick, load_outputs, md_table, pct,  # noqa: E402
                    point_text, print_table, scale_text, train_run, write)

from edgeexit.models import ModelConfig  # noqa: E402
from edgeexit.rundir import LOCK  # noqa: E402
from edgeexit.train.distill import parse_distill  # noqa: E402

VARIANTS = {"baseline": (False, False), "distill": (True, False), "equilibrium": (False, True), "both": (True, True)}


def train_runs(args) -> list[tuple[str, Path]]:
    """Train every backbone x head x variant; (name, checkpoint) of each (the head in the name unless AEP's)."""
    distill = parse_distill(args.distill)
    out = []
    for backbone in args.backbones.split(","):
        for head in args.heads.split(","):
            for variant in args.variants.split(","):
                use_distill, equilibrium = VARIANTS[variant]
                model = ModelConfig(backbone=backbone, exits=args.exits, head=head)
                name = f"{backbone}/{variant}" + ("" if head == "aep" else f"+{head}")
                run = train_run(args, name, model, method="aep", weight_mode="unif",
                                distill=distill if use_distill else None, gradient_equilibrium=equilibrium)
                out.append((name, run.checkpoint))
    return out


def read_runs(specs: list[str]) -> list[tuple[str, Path]]:
    out = []
    for spec in specs:
        name, sep, where = spec.partition("=")
        if not sep or not name or not where:
            sys.exit(f"--runs takes NAME=DIR (a run directory holding checkpoint.pt), got {spec!r}")
        ckpt = Path(where) / "checkpoint.pt"
        if not ckpt.is_file():
            sys.exit(f"{name}: no {ckpt} (is the run finished?)")
        writer = live_writer(Path(where))
        if writer:
            sys.exit(f"{name}: {where} is still being written by {writer}; its checkpoint.pt may be an epoch's, not "
                     "the final one: wait for that command to finish")
        out.append((name, ckpt))
    return out


def live_writer(run: Path) -> str | None:
    """The edgeexit command holding `run` (its lock file names the pid), if that process still runs. Read only:
    taking the lock, even briefly, could refuse the build that owns the run."""
    try:
        holder = (run / LOCK).read_text().strip()  # "pid 5806 (build)"
        pid = int(holder.split()[1])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        return None
    return holder if b"edgeexit" in cmdline else None


def describe(train_config: dict, head: str = "aep") -> str:
    d = train_config.get("distill")
    return (f"{head} heads, distill {'T=%g, a=%g' % tuple(d) if d else 'off'}, equilibrium "
            f"{'on' if train_config.get('gradient_equilibrium') else 'off'}, {train_config.get('epochs')} ep, "
            f"seed {train_config.get('seed')}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=None, metavar="NAME=DIR",
                   help="read these runs' checkpoint.pt instead of training (the first is the baseline)")
    p.add_argument("--backbones", default="resnet18,cifar_resnet20")
    p.add_argument("--variants", default=",".join(VARIANTS), help="of " + ", ".join(VARIANTS))
    p.add_argument("--distill", default="3,0.9", help="T,alpha of the distill variants (IMTA's defaults)")
    p.add_argument("--exits", default="stages")
    p.add_argument("--heads", default="aep", help="exit heads: aep (the classifier replicated), conv (MSDNet's)")
    add_scale(p)
    args = apply_quick(p.parse_args(argv), backbones="tiny_cnn")
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        sys.exit(f"unknown variant(s) {bad}; expected some of {', '.join(VARIANTS)}")
    t0 = time.time()
    if args.runs:
        runs, scale = read_runs(args.runs), "existing runs, each on its whole recorded validation and test splits"
    else:
        runs, scale = train_runs(args), scale_text(args)
    results = []
    for name, ckpt in runs:
        t = load_outputs(ckpt)
        results.append({"run": name, "checkpoint": str(ckpt), "train_config": t.train_config, "data": asdict(t.data),
                        "backbone": t.model.backbone, "head": t.model.head, **accuracy_cost(t)})
    if args.runs:  # what the first run was trained with, in words
        d, c = results[0]["data"], results[0]["train_config"]
        limits = ", ".join(f"{k} {d[k]}" for k in ("limit_train", "limit_val", "limit_test") if d.get(k))
        scale += (f"; the first run: {d['name']} at {d['image_size']} px{', ' + limits if limits else ''}, "
                  f"{c.get('epochs')} epochs, lr {c.get('lr')} {c.get('schedule')}, seed {c.get('seed')}")
    report = {"scale": scale, "budgets": list(BUDGETS), "runs": results, "seconds": time.time() - t0}
    for r in results:  # the same data, epochs and seed, or the comparison says nothing
        keys = ("epochs", "seed", "lr", "batch_size", "schedule", "method", "weight_mode")
        first = results[0]
        r["same_schedule_as_first"] = (r["data"] == first["data"] and
                                       all(r["train_config"].get(k) == first["train_config"].get(k) for k in keys))
    print_and_write(report, args.out)
    return report


def baseline_of(results: list[dict], r: dict) -> dict:
    """The run `r` is compared with: the baseline of its backbone (train mode), else the first run."""
    prefix = r["run"].split("/")[0] + "/"
    same = [b for b in results if b["run"].startswith(prefix)] if "/" in r["run"] else []
    return (same or results)[0]


def print_and_write(report: dict, out: Path) -> None:
    results = report["runs"]
    header = ["run", "options", "test acc per exit", "full", *[f"acc @{b:.0%}" for b in report["budgets"]],
              "MACs for full -1 pt", "Δ vs baseline: exit 1 / @30% / MACs for -1 pt"]
    rows = []
    for r in results:
        base = baseline_of(results, r)
        need = r["within_1pt"]["test_cost_fraction"] if r["within_1pt"] else None
        base_need = base["within_1pt"]["test_cost_fraction"] if base["within_1pt"] else None
        delta = "" if base is r else (
            f"{100 * (r['test_exit_accuracy'][0] - base['test_exit_accuracy'][0]):+.1f} / "
            + (f"{100 * (r['points'][0]['test_accuracy'] - base['points'][0]['test_accuracy']):+.1f} pt / "
               if r["points"][0]["test_accuracy"] is not None and base["points"][0]["test_accuracy"] is not None else "n/a / ")
            + (f"{100 * (need - base_need):+.1f} pt" if need is not None and base_need is not None else "n/a"))
        rows.append([r["run"], describe(r["train_config"], r.get("head", "aep")) + ("" if r["same_schedule_as_first"] else " (OTHER DATA OR SCHEDULE)"),
                     " ".join(pct(a) for a in r["test_exit_accuracy"]), pct(r["full_test_accuracy"], 2),
                     *[point_text(pt) for pt in r["points"]],
                     f"{pct(need)} %" if need is not None else "not reached", delta])
    print_table("Self-distillation and gradient equilibrium: test accuracy (%), thresholds calibrated on val", header,
                rows, caption=report["scale"])
    text = (f"# Self-distillation and gradient equilibrium (`tools/reproduce/distill.py`)\n\nScale: {report['scale']}.\n"
            "Accuracies in % on the test split; `acc @30%` is the accuracy at thresholds calibrated on validation for "
            "30 % of the unsplit model's MACs (search policy, max softmax), with the MACs they cost on test in "
            "brackets; `MACs for full -1 pt` is the smallest swept budget whose test accuracy is within 1 pt of the "
            "final exit's.\n\n" + md_table(header, rows))
    write(out, "distill", report, text)


if __name__ == "__main__":
    main()
