"""The performance targets: early-exit runtime vs the full (unsplit) model on one backend, on the bundle's test split.

For batch 1 and batch 64 (compaction on), one process per runtime, alternating rounds; each process runs
the same test images and reports its total time. The full model is the bundle's reference model on the same
backend (`EarlyExitRuntime.reference()`). Printed: accuracy of both (and the loss in points), the mean MACs
fraction of the unsplit model, and the median time ratio early-exit / full with its spread.
Target (ResNet-18, Fashion-MNIST, 32 px, <= 1 pt accuracy loss): early-exit time <= the mean MACs fraction, at batch
1 and at the target's largest batch (64 for cpu, 8 for android), on onnxruntime and on ExecuTorch.

    .venv/bin/python tools/bench/early_exit.py --bundle runs/default/bundle [--backend onnxruntime|torch]
    .venv/bin/python tools/bench/early_exit.py --bundle runs/android/bundle --batches 1,8      # ExecuTorch
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alternate import alternate, describe  # noqa: E402


def worker(args) -> None:
    from edgeexit.bundle import load_bundle
    from edgeexit.pipeline import test_split
    from edgeexit.runtime import EarlyExitRuntime

    b = load_bundle(args.bundle)
    x, y = test_split(b, "test", args.samples)
    rt = EarlyExitRuntime.open(b, backend=args.backend, threads=args.threads or None)
    if args.worker == "full":
        full = rt.reference()
        run = lambda c: full.run(c).argmax(1)  # noqa: E731
    else:
        run = lambda c: rt.run(c).predictions  # noqa: E731
    chunks = [x[i:i + args.batch] for i in range(0, len(x) - args.batch + 1, args.batch)]
    for c in chunks[: max(3, len(chunks) // 10)]:  # warm-up
        run(c)
    t = time.perf_counter()
    preds = [run(c) for c in chunks]
    seconds = time.perf_counter() - t
    preds = np.concatenate(preds)
    print(json.dumps({"seconds": seconds, "accuracy": float((preds == y[: len(preds)]).mean()), "images": len(preds),
                      "backend": rt.backend.name}))


def main() -> None:
    from edgeexit.runtime.registry import REGISTRY

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("runs/default/bundle"))
    p.add_argument("--backend", choices=list(REGISTRY), default=None,
                   help="runtime to time both models on (default: the one the bundle's target runs on)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--samples", type=int, default=2000, help="test images per process")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads of the backend (0 = its default)")
    p.add_argument("--worker", choices=["full", "early_exit"])
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from edgeexit.bundle import REPORTS, load_bundle
    from edgeexit.runtime import default_backend

    b = load_bundle(args.bundle)
    backend = args.backend or default_backend(b)
    saved = args.bundle / REPORTS / "eval.json"  # what `edgeexit build` / `report` attached
    ev = json.loads(saved.read_text()) if saved.exists() else None
    thresholds = [None if t is None else round(t, 4) for t in b.manifest.thresholds]
    print(f"bundle {args.bundle}: {b.manifest.model['backbone']}, exits {[e.name for e in b.exits]}, "
          f"thresholds {thresholds}; backend {backend}; {args.samples} test images per process, {args.rounds} rounds")
    if ev:
        print(f"whole test split (eval.json, {ev.get('backend', '?')}): accuracy full {ev['full_accuracy']:.4f} vs early exit "
              f"{ev['early_exit_accuracy']:.4f} ({100 * (ev['early_exit_accuracy'] - ev['full_accuracy']):+.2f} pt), "
              f"mean MACs fraction {ev['macs_fraction']:.3f}")
    for batch in (int(v) for v in args.batches.split(",")):
        common = ["--bundle", str(args.bundle), "--batch", str(batch), "--samples", str(args.samples),
                  "--threads", str(args.threads), "--backend", backend]
        s = alternate(__file__, ("full", "early_exit"), common, args.rounds)
        acc = {m: s["extra"][m]["accuracy"] for m in ("full", "early_exit")}
        images = s["extra"]["full"]["images"]  # whole batches only: fewer than --samples when it does not divide
        print(describe(f"batch {batch:>3}: early-exit / full time", s, unit_scale=1e3 / images, unit="ms/img")
              + f"; accuracy {acc['full']:.4f} vs {acc['early_exit']:.4f}")


if __name__ == "__main__":
    main()
