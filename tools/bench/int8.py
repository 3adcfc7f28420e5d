"""ExecuTorch int8 against fp32: the early-exit runtime of two bundles of the same checkpoint (`edgeexit export
--target android` with --precision fp32 and int8), on the same test images, one process per bundle, alternating.
Printed per batch size: the time ratio fp32 / int8 (the speed-up) with its spread, and both accuracies.
Target (ResNet-18, Fashion-MNIST, 32 px): >= 1.8x at <= 0.5 pt accuracy loss.

    .venv/bin/python tools/bench/int8.py --fp32 runs/android_bundle --int8 runs/android_int8
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

    b = load_bundle(args.fp32 if args.worker == "fp32" else args.int8)
    x, y = test_split(b, "test", args.samples)
    rt = EarlyExitRuntime.open(b, args.backend)
    chunks = [x[i:i + args.batch] for i in range(0, len(x) - args.batch + 1, args.batch)]
    for c in chunks[: max(3, len(chunks) // 10)]:  # warm-up
        rt.run(c)
    t = time.perf_counter()
    preds = np.concatenate([rt.run(c).predictions for c in chunks])
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "accuracy": float((preds == y[: len(preds)]).mean()), "images": len(preds)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fp32", type=Path, required=True)
    p.add_argument("--int8", type=Path, required=True)
    p.add_argument("--backend", default=None, help="default: the bundles' own (executorch)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--worker", choices=["fp32", "int8"])
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"fp32 {args.fp32} vs int8 {args.int8}; {args.samples} test images per process, {args.rounds} rounds")
    for batch in (int(v) for v in args.batches.split(",")):
        common = ["--fp32", str(args.fp32), "--int8", str(args.int8), "--batch", str(batch), "--samples",
                  str(args.samples)] + (["--backend", args.backend] if args.backend else [])
        s = alternate(__file__, ("int8", "fp32"), common, args.rounds)
        acc = {m: s["extra"][m]["accuracy"] for m in ("fp32", "int8")}
        images = s["extra"]["fp32"]["images"]
        print(describe(f"batch {batch:>2}: fp32 / int8 time (the int8 speed-up)", s, unit_scale=1e3 / images,
                       unit="ms/img") + f"; accuracy fp32 {acc['fp32']:.4f} vs int8 {acc['int8']:.4f}")


if __name__ == "__main__":
    main()
