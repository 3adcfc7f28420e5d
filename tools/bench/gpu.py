"""Early exit vs the unsplit model on the same GPU backend: does skipping MACs save time on a GPU?

For every GPU backend in the registry that can run the bundle here (e.g. torch-cuda on its .pt2 programs; tensorrt
on its engines, once `edgeexit engines` has built them), batch 1 and 64, at the bundle's calibrated thresholds: one process per
runtime, alternating rounds (alternate.py); the full model is the bundle's reference on the same backend. Printed per
backend and batch: the time ratio early-exit / full, the mean MACs fraction on the same images, and

    time saving / MAC saving = (1 - time ratio) / (1 - MACs fraction)

1.0 means the exits save time in proportion to the MACs they skip; the goal is >= 0.8 at batch 64 with the
compaction on the GPU (only exit flags come back to the host). A batch above the bundle's largest is run in chunks.

    .venv/bin/python tools/bench/gpu.py --bundle runs/jetson/bundle [--backends torch-cuda,tensorrt] [--batches 1,64]
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


def gpu_backends() -> list[str]:
    from edgeexit.runtime.registry import REGISTRY

    return [n for n, s in REGISTRY.items() if s.needs_gpu]


def gpu_count() -> int:
    """CUDA devices seen by cuda-python, else by torch; 0 when neither sees one."""
    from edgeexit.runtime.trt_device import cuda_device_count

    n = cuda_device_count()
    if n:
        return n
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def worker(args) -> None:
    from edgeexit.bundle import load_bundle
    from edgeexit.pipeline import test_split
    from edgeexit.runtime import EarlyExitRuntime

    b = load_bundle(args.bundle)
    x, y = test_split(b, "test", args.samples)
    rt = EarlyExitRuntime.open(b, backend=args.backend)
    macs = []
    if args.worker == "full":
        full = rt.reference()
        run = lambda c: full.run(c).argmax(1)  # noqa: E731
    else:
        def run(c):
            r = rt.run(c)
            macs.append(r.macs)
            return r.predictions
    chunks = [x[i:i + args.batch] for i in range(0, len(x) - args.batch + 1, args.batch)]
    for c in chunks[: max(5, len(chunks) // 10)]:  # warm-up: kernels, allocator pools, shape changes
        run(c)
    macs.clear()
    rt.backend.synchronize()
    t = time.perf_counter()
    preds = [run(c) for c in chunks]  # each run downloads its answers: the GPU has finished when it returns
    seconds = time.perf_counter() - t
    preds = np.concatenate(preds)
    fraction = float(np.concatenate(macs).mean() / b.manifest.full_macs) if macs else 1.0
    print(json.dumps({"seconds": seconds, "accuracy": float((preds == y[: len(preds)]).mean()), "images": len(preds),
                      "macs_fraction": fraction, "backend": rt.backend.name}))


def available(bundle, wanted: list[str] | None) -> list[str]:
    """The GPU backends that can run this bundle here (or why not, as SystemExit when one named cannot)."""
    from edgeexit.errors import EdgeExitError
    from edgeexit.runtime.registry import REGISTRY, backends_for, spec

    names = wanted or [n for n in backends_for(bundle.manifest) if REGISTRY[n].needs_gpu]
    ok = []
    for name in names:
        try:
            usable, why, install = spec(name).available()
            if not usable:
                if wanted:
                    raise SystemExit(f"backend {name} cannot run here: {why} ({install})")
                print(f"skipping {name}: {why} ({install})")
                continue
            spec(name).make().close()
            ok.append(name)
        except EdgeExitError as err:
            if wanted:
                raise SystemExit(f"backend {name} cannot run here: {err}")
            print(f"skipping {name}: {err.what}")
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=Path("runs/jetson/bundle"))
    p.add_argument("--backends", default=None, help=f"comma-separated, of {', '.join(gpu_backends())} (default: all present)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--samples", type=int, default=4096, help="test images per process")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--worker", choices=["full", "early_exit"])
    p.add_argument("--backend", default=None)
    p.add_argument("--batch", type=int, default=1)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if gpu_count() == 0:
        raise SystemExit(f"no CUDA device here: tools/bench/gpu.py times backends on a GPU ({', '.join(gpu_backends())}). "
                         "Run it on the Jetson or a GPU machine; on this CPU use tools/bench/early_exit.py")
    from edgeexit.bundle import load_bundle

    b = load_bundle(args.bundle)
    backends = available(b, [n.strip() for n in args.backends.split(",")] if args.backends else None)
    if not backends:
        raise SystemExit(f"no GPU backend can run {args.bundle} here (formats {b.manifest.formats}); the registry's GPU "
                         f"backends: {', '.join(gpu_backends())} (TensorRT engines: edgeexit engines BUNDLE)")
    thresholds = [None if t is None else round(t, 4) for t in b.manifest.thresholds]
    print(f"bundle {args.bundle}: {b.manifest.model['backbone']}, exits {[e.name for e in b.exits]}, thresholds "
          f"{thresholds}, largest batch {b.manifest.batch.max}; {args.samples} test images per process, {args.rounds} rounds")
    for backend in backends:
        for batch in (int(v) for v in args.batches.split(",")):
            common = ["--bundle", str(args.bundle), "--batch", str(batch), "--samples", str(args.samples),
                      "--backend", backend]
            s = alternate(__file__, ("full", "early_exit"), common, args.rounds)
            images = s["extra"]["full"]["images"]
            macs = s["extra"]["early_exit"]["macs_fraction"]
            acc = {m: s["extra"][m]["accuracy"] for m in ("full", "early_exit")}
            saving = (1 - s["ratio"]) / (1 - macs) if macs < 1 else float("nan")
            print(describe(f"{backend} batch {batch:>3}: early-exit / full time", s, unit_scale=1e3 / images, unit="ms/img")
                  + f"; MACs fraction {macs:.3f}; time saving / MAC saving {saving:.2f}"
                  + f"; accuracy {acc['full']:.4f} vs {acc['early_exit']:.4f}")


if __name__ == "__main__":
    main()
