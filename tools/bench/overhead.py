"""Overhead of the early-exit runtime when every sample goes to the final exit, against the unsplit model.

One process per runtime (onnxruntime thread pools of two runtimes in one process disturb each other), run
alternately for several rounds; each process warms up, then reports the median time per call. Printed: the
median over rounds of the ratio forced-final / unsplit, with its spread, at batch 1 and 64. Goal: <= 1.02.

    .venv/bin/python tools/bench/overhead.py                 # ResNet-18, 32 px, 1 channel, random weights
    .venv/bin/python tools/bench/overhead.py --bundle runs/default/bundle
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alternate import alternate, describe  # noqa: E402


def make_segments(out: Path, backbone: str) -> Path:
    """A bundle-like folder: segment files, the reference model and the output shapes (weights do not matter)."""
    import torch

    from edgeexit.calibrate.scores import score_fn_torch
    from edgeexit.export import export_segments, export_unsplit, segment_output_shapes
    from edgeexit.models import ModelConfig, build_model
    from edgeexit.models.costs import count_costs

    torch.manual_seed(0)
    net = build_model(ModelConfig(backbone=backbone, in_channels=1, image_size=32)).eval()
    score = score_fn_torch("max_softmax")
    export_segments(net, score, (1, 32, 32), out / "segments")
    export_unsplit(net, (1, 32, 32), out / "reference" / "full.onnx")
    meta = {"output_shapes": segment_output_shapes(net, score, (1, 32, 32)),
            "cumulative_macs": count_costs(net, 1, 32).cumulative_macs, "input_shape": [1, 32, 32]}
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def worker(args) -> None:
    from edgeexit.runtime import EarlyExitRuntime, OrtModel, OrtSegment

    d = Path(args.dir)
    if (d / "manifest.json").exists():
        from edgeexit.bundle import load_bundle

        b = load_bundle(d)
        shapes = [e["output_shapes"] for e in b.exits]
        macs = [e["cumulative_macs"] for e in b.exits]
        segs = [b.path(e["segment"]) for e in b.exits]
        ref, shape = b.path(b.manifest["reference"]), b.input_shape
    else:
        meta = json.loads((d / "meta.json").read_text())
        shapes, macs, shape = meta["output_shapes"], meta["cumulative_macs"], tuple(meta["input_shape"])
        segs = [d / "segments" / f"seg{k}.onnx" for k in range(len(shapes))]
        ref = d / "reference" / "full.onnx"
    x = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
    if args.worker == "full":
        model = OrtModel(ref, threads=args.threads)
        fn = lambda: model.run(x)  # noqa: E731
    else:
        runners = [OrtSegment(p, s, threads=args.threads) for p, s in zip(segs, shapes)]
        rt = EarlyExitRuntime(runners, [math.inf] * len(runners), macs, shape, shapes[-1][0][0])
        fn = lambda: rt.run(x)  # noqa: E731
    deadline = time.perf_counter() + args.warmup_s
    while time.perf_counter() < deadline:
        fn()
    times = []
    for _ in range(args.iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    print(json.dumps({"seconds": statistics.median(times)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="a bundle directory (default: export a random-weight model)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batches", default="1,64")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    p.add_argument("--worker", choices=["full", "forced"])
    p.add_argument("--dir")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=0)
    p.add_argument("--warmup-s", type=float, default=1.0)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    tmp = None
    if args.bundle is None:
        tmp = tempfile.TemporaryDirectory()
        d = make_segments(Path(tmp.name), args.backbone)
    else:
        d = args.bundle
    print(f"model: {args.bundle or args.backbone + ' (random weights, 32 px, 1 channel)'}; onnxruntime CPU; "
          f"{args.rounds} rounds, one process per runtime, alternating")
    for batch in (int(b) for b in args.batches.split(",")):
        iters = 400 if batch == 1 else 30
        common = ["--dir", str(d), "--batch", str(batch), "--iters", str(iters), "--threads", str(args.threads)]
        summary = alternate(__file__, ("full", "forced"), common, args.rounds)
        print(describe(f"batch {batch:>3}: forced-final / unsplit", summary))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
