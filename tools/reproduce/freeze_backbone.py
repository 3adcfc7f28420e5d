"""Exits on an already-trained classifier, its answers unchanged (issue 12), next to the jointly trained default build.

1. A plain torchvision ResNet-18 (1-channel stem, 10 classes, no exits) is trained on Fashion-MNIST (32 px) with the
   default build's settings: Adam 1e-3 cosine-annealed to 0, batch 64, the same epochs and train split; its
   state_dict is saved (`plain.pt`) and its test predictions and logits are kept.
2. `edgeexit build --weights plain.pt --freeze-backbone` (otherwise the defaults: exits after layer1..layer4, AEP
   heads, budget 0.6 of the MACs, target cpu) trains only the exit heads.
3. `edgeexit build` with the defaults (the whole network trained jointly with its exits), unless --joint-run names
   a run directory that already holds one, or --joint-checkpoint gives the checkpoint of such a build: then only
   build's later stages run on a copy of it (prune --budget 0.6, calibrate, export, eval), with this code.
--reuse keeps a plain.pt and a frozen build already in --work (a run stopped half-way).

Printed and written (markdown + JSON): how many test samples the frozen bundle's full model (torch and onnxruntime)
answers differently from the plain classifier (0 expected) and its max |Δlogits|; for both builds the full-model and
early-exit test accuracy, the mean MACs as a fraction of the unsplit model, the measured early-exit time as a
fraction of the unsplit model's on onnxruntime (batch 1 and 64), and the exit histogram.

    .venv/bin/python tools/reproduce/freeze_backbone.py --work runs/repro_freeze            # the whole thing, ~30 min
    .venv/bin/python tools/reproduce/freeze_backbone.py --work /tmp/fb --limit-train 512 --limit-val 256 --limit-test 256 \
        --epochs 1                                                                       # a quick check of the script
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from edgeexit.data.batches import batches
from edgeexit.pipeline import DataConfig

RESULTS = Path(__file__).resolve().parent / "results"


def plain_classifier(args, out: Path) -> dict:
    """Train the user's plain ResNet-18 and save its state_dict at `out` (with --reuse, load it from there); its test
    logits and accuracy."""
    torch.manual_seed(args.seed)
    splits = DataConfig("fashion-mnist", 32, args.seed, None, args.limit_train, args.limit_val, args.limit_test).load()
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # grayscale input
    side = out.with_suffix(".json")
    if args.reuse and out.is_file():
        model.load_state_dict(torch.load(out, weights_only=True))
        return _test(model, splits, json.loads(side.read_text())["train_seconds"] if side.is_file() else None)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    steps = args.epochs * math.ceil(len(splits.train) / args.batch_size)
    step, t0 = 0, time.time()
    for epoch in range(args.epochs):
        model.train()
        for x, y in batches(splits.train, args.batch_size, shuffle=True, generator=gen):
            for group in opt.param_groups:  # the build's cosine schedule, annealed to 0 over the run
                group["lr"] = args.lr * (1 + math.cos(math.pi * step / steps)) / 2
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            step += 1
        print(f"plain classifier: epoch {epoch + 1}/{args.epochs} done ({time.time() - t0:.0f} s)", flush=True)
    torch.save(model.state_dict(), out)
    side.write_text(json.dumps({"train_seconds": time.time() - t0}))
    return _test(model, splits, time.time() - t0)


def _test(model: nn.Module, splits, seconds: float | None) -> dict:
    model.eval()
    logits = []
    with torch.no_grad():
        for x, _ in batches(splits.test, 500, shuffle=False):
            logits.append(model(x))
    logits = torch.cat(logits).numpy()
    labels = splits.test.labels.numpy()
    return {"logits": logits, "labels": labels, "accuracy": float((logits.argmax(1) == labels).mean()),
            "train_seconds": seconds}


def later_stages(run: Path, checkpoint: Path, args) -> None:
    """What `edgeexit build` does after training, on a copy of `checkpoint`: prune, calibrate, export, eval."""
    import shutil

    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint, run / "checkpoint.pt")
    for stage in (["prune", "--budget", "0.6"], ["calibrate", "--budget", "0.6"], ["export"]):
        _edgeexit([*stage, "--run-dir", str(run)])
    _edgeexit(["eval", str(run / "bundle"), "--json", str(run / "eval.json")])


def _edgeexit(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "edgeexit", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build(run: Path, args, extra: list[str]) -> None:
    limits = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("limit_train", "limit_val", "limit_test")
              if getattr(args, k) is not None]
    _edgeexit(["build", "--run-dir", str(run), "--epochs", str(args.epochs), "--seed", str(args.seed), *limits, *extra])


def same_answers(run: Path, plain: dict) -> dict:
    """The frozen build's full model against the plain classifier on the whole test split, in torch and onnxruntime."""
    from edgeexit.bundle import load_bundle
    from edgeexit.pipeline import test_split
    from edgeexit.runtime import EarlyExitRuntime
    from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint

    net, _ = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    bundle = load_bundle(run / "bundle")
    x, y = test_split(bundle, "test")
    assert (y == plain["labels"]).all()
    with torch.no_grad():
        torch_logits = torch.cat([net(torch.from_numpy(x[i:i + 500]))[-1] for i in range(0, len(x), 500)]).numpy()
    rt = EarlyExitRuntime.open(bundle, "onnxruntime")
    forced = rt.with_thresholds([None] * rt.num_exits)
    ort_final = np.concatenate([forced.run(x[i:i + 64]).logits for i in range(0, len(x), 64)])
    ort_reference = np.concatenate([rt.reference().run(x[i:i + 64]) for i in range(0, len(x), 64)])
    want = plain["logits"]
    return {
        "samples": int(len(y)),
        "torch_final_exit_bit_identical": bool(np.array_equal(torch_logits, want)),
        "torch_max_abs_logits": float(np.abs(torch_logits - want).max()),
        "torch_predictions_changed": int((torch_logits.argmax(1) != want.argmax(1)).sum()),
        "onnxruntime_final_exit_max_abs_logits": float(np.abs(ort_final - want).max()),
        "onnxruntime_final_exit_predictions_changed": int((ort_final.argmax(1) != want.argmax(1)).sum()),
        "onnxruntime_reference_predictions_changed": int((ort_reference.argmax(1) != want.argmax(1)).sum()),
    }


def figures(run: Path) -> dict:
    ev = json.loads((run / "eval.json").read_text())
    cal = json.loads((run / "calibration.json").read_text())
    keys = ("full_accuracy", "early_exit_accuracy", "macs_fraction", "latency_fraction_by_batch", "exit_histogram",
            "exit_names", "samples", "agreement_with_full")
    return {**{k: ev[k] for k in keys}, "temperatures": cal.get("temperatures"),
            "ece_before": (cal.get("calibration_error") or {}).get("ece_before"),
            "ece_after": (cal.get("calibration_error") or {}).get("ece_after")}


def markdown(result: dict, args) -> str:
    s, f, j = result["same_answers"], result["frozen"], result["joint"]
    rows = [("", "plain ResNet-18 + exits, --freeze-backbone", "default build (trained jointly)")]

    def row(name, fn):
        rows.append((name, fn(f), fn(j)))

    row("full-model test accuracy", lambda r: f"{r['full_accuracy']:.4f}")
    row("early-exit test accuracy", lambda r: f"{r['early_exit_accuracy']:.4f}")
    row("mean MACs / unsplit model", lambda r: f"{r['macs_fraction']:.3f}")
    for batch in ("1", "64"):
        row(f"measured time / unsplit model, batch {batch} (onnxruntime)",
            lambda r, b=batch: f"{r['latency_fraction_by_batch'].get(b, float('nan')):.3f}")
    row("samples answered per exit", lambda r: ", ".join(f"{n} {c}" for n, c in zip(r["exit_names"], r["exit_histogram"])))
    row("temperatures per exit", lambda r: ", ".join(f"{t:.2f}" for t in r["temperatures"] or []))
    row("ECE before -> after, per exit", lambda r: ", ".join(f"{a:.3f}->{b:.3f}" for a, b in
                                                               zip(r["ece_before"] or [], r["ece_after"] or [])))
    table = "\n".join("| " + " | ".join(r) + " |" for r in [rows[0], ("---",) * 3, *rows[1:]])
    return f"""# Exits on an already-trained ResNet-18, its answers unchanged (`tools/reproduce/freeze_backbone.py`)

Fashion-MNIST, 32 px, {args.epochs} epochs everywhere (the default build's), budget 0.6 of the MACs, target cpu
(onnxruntime), {s['samples']} test images. The plain classifier (no exits) reached test accuracy
{result['plain_accuracy']:.4f} (trained for {result['plain_train_seconds'] or float('nan'):.0f} s). Jointly trained
build: {result['joint_source']}.

The frozen build's full model against the plain classifier, every test sample:
- torch, final exit: bit-identical logits: **{s['torch_final_exit_bit_identical']}** (max |Δ| {s['torch_max_abs_logits']:.1e}),
  predictions changed: **{s['torch_predictions_changed']}**
- onnxruntime, final exit forced: max |Δlogits| {s['onnxruntime_final_exit_max_abs_logits']:.1e}, predictions changed:
  **{s['onnxruntime_final_exit_predictions_changed']}**; the bundle's reference (unsplit) model: **{s['onnxruntime_reference_predictions_changed']}**

{table}

Times are ratios measured side by side by `edgeexit build` (its eval step) on a shared 2-core CPU: noisy, ±15 %.
Command: `{result['command']}`
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("runs/repro_freeze"))
    p.add_argument("--joint-run", type=Path, default=None, help="a run directory with a default build to compare with")
    p.add_argument("--joint-checkpoint", type=Path, default=None,
                   help="the checkpoint.pt of a default build: run build's stages after training on a copy of it")
    p.add_argument("--reuse", action="store_true", help="keep WORK/plain.pt and WORK/frozen when they are there")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-val", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--results", type=Path, default=None, help="where to write freeze_backbone.{md,json} "
                                                               "(default: tools/reproduce/results for a full run)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    weights = args.work / "plain.pt"
    plain = plain_classifier(args, weights)
    print(f"plain classifier test accuracy {plain['accuracy']:.4f}", flush=True)
    if not (args.reuse and (args.work / "frozen" / "eval.json").is_file()):
        build(args.work / "frozen", args, ["--weights", str(weights), "--freeze-backbone"])
    joint = args.joint_run or args.work / "joint"
    if args.joint_run is not None:
        source = f"the build in {args.joint_run}"
    elif args.joint_checkpoint is not None:
        later_stages(joint, args.joint_checkpoint, args)
        source = (f"the default build's checkpoint ({args.joint_checkpoint}, `edgeexit build` defaults, "
                  f"{args.epochs} epochs), pruned, calibrated, exported and evaluated again with this code")
    else:
        build(joint, args, [])
        source = "`edgeexit build` with the defaults, run by this script"
    result = {"plain_accuracy": plain["accuracy"], "plain_train_seconds": plain["train_seconds"], "joint_source": source,
              "same_answers": same_answers(args.work / "frozen", plain),
              "frozen": figures(args.work / "frozen"), "joint": figures(joint), "command": " ".join(sys.argv)}
    text = markdown(result, args)
    print(text)
    full = all(getattr(args, k) is None for k in ("limit_train", "limit_val", "limit_test"))
    out = args.results or (RESULTS if full else args.work)
    out.mkdir(parents=True, exist_ok=True)
    (out / "freeze_backbone.md").write_text(text)
    (out / "freeze_backbone.json").write_text(json.dumps(result, indent=2))
    print(f"-> {out / 'freeze_backbone.md'}")


if __name__ == "__main__":
    main()
