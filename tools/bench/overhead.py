"""What splitting costs: the early-exit runtime with every sample forced to the final exit, against the unsplit model,
with the exit heads' share split out by a second yardstick, "all heads, one graph" (the same segments, heads and
scores in one ONNX graph: everything the split runtime computes, without the split).

    forced / unsplit     the whole overhead of the early-exit runtime when no sample exits early
    heads  / unsplit     what the exit heads and scores cost
    forced / heads       what splitting costs (session calls, graph boundaries, the exit loop)

One process per runtime (onnxruntime thread pools of two runtimes in one process disturb each other), alternating
for several rounds; each process warms up, then times calls for a fixed time and reports the median per call.
Printed: the median over rounds of each ratio with its spread. Goal (ResNet-18, batch 1): forced / unsplit <= 1.05
at 32 px, <= 1.02 at 224 px.

    .venv/bin/python tools/bench/overhead.py                      # ResNet-18, random weights, 32 px x1 and 224 px x3
    .venv/bin/python tools/bench/overhead.py --sizes 32:1 --batches 1
    .venv/bin/python tools/bench/overhead.py --bundle runs/default/bundle   # forced vs unsplit of a real bundle
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alternate import describe, rounds_of, summarise  # noqa: E402

MAX_BATCH = 64


def make_models(out: Path, backbone: str, channels: int, size: int) -> Path:
    """Segments, the unsplit model and the all-heads graph of a random-weight network, lowered to ONNX."""
    import torch
    from torch import nn

    from edgeexit.export import export_program, lower_onnx, split_programs
    from edgeexit.models import ModelConfig, build_model
    from edgeexit.models.costs import count_costs
    from edgeexit.models.scores import score_fn_torch

    torch.manual_seed(0)
    net = build_model(ModelConfig(backbone=backbone, in_channels=channels, image_size=size)).eval()
    score = score_fn_torch("max_softmax")
    programs, reference = split_programs(net, score, (channels, size, size), max_batch=MAX_BATCH)

    class AllHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.segs = nn.ModuleList(net.exit_segment(k, score) for k in range(net.num_exits))

        def forward(self, x):
            outs = []
            for seg in self.segs:
                got = seg(x)
                x = got[0]
                outs += list(got if seg.final else got[1:])
            return tuple(outs)

    names = tuple(f"{n}{k}" for k in range(net.num_exits) for n in ("logits", "score"))
    heads = export_program("all_heads", AllHeads(), reference.example, names, MAX_BATCH)
    meta = {"input_shape": [channels, size, size], "cumulative_macs": count_costs(net, channels, size).cumulative_macs,
            "full_macs": count_costs(net, channels, size).full_macs, "segments": []}
    for p in [*programs, reference, heads]:
        lower_onnx(p, out / f"{p.name}.onnx")
        meta["segments"].append({"name": p.name, "inputs": [i.model_dump() for i in p.inputs],
                                 "outputs": [o.model_dump() for o in p.outputs]})
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def _runner(args):
    from edgeexit.bundle import TensorSpec
    from edgeexit.runtime import EarlyExitRuntime, ModelRunner, make_backend
    from edgeexit.runtime.registry import host_backend_of

    onnx_cpu = host_backend_of("onnx").name  # the models here are ONNX files: the registry's CPU backend for them
    d = Path(args.dir)
    if (d / "manifest.json").exists():
        rt = EarlyExitRuntime.open(d, onnx_cpu, threads=args.threads or None)
        if args.worker == "heads":
            raise SystemExit("a bundle has no all-heads graph")
        return rt.input_shape, (rt.reference().run if args.worker == "full" else rt.with_thresholds([None] * rt.num_exits).run)
    meta = json.loads((d / "meta.json").read_text())
    be = make_backend(onnx_cpu, threads=args.threads or None)
    segs = {m["name"]: be.open_segment(d / f"{m['name']}.onnx", None, [TensorSpec(**i) for i in m["inputs"]],
                                       [TensorSpec(**o) for o in m["outputs"]], MAX_BATCH)
            for m in meta["segments"] if m["name"] == {"full": "reference", "heads": "all_heads"}.get(args.worker, m["name"])}
    shape = tuple(meta["input_shape"])
    if args.worker == "full":
        return shape, ModelRunner(be, segs["reference"], shape, MAX_BATCH).run
    if args.worker == "heads":
        seg = segs["all_heads"]
        name = seg.inputs[0].name
        return shape, lambda x: [np.array(v) for v in seg.run({name: x}).values()]
    ordered = [segs[f"seg{k}"] for k in range(len(meta["cumulative_macs"]))]
    rt = EarlyExitRuntime(be, ordered, [None] * len(ordered), meta["cumulative_macs"], shape,
                          ordered[-1].outputs[0].shape[1], MAX_BATCH)
    return shape, rt.run


def worker(args) -> None:
    shape, fn = _runner(args)
    x = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
    deadline = time.perf_counter() + args.warmup_s
    while time.perf_counter() < deadline:
        fn(x)
    times = []
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    print(json.dumps({"seconds": statistics.median(times), "calls": len(times)}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, help="a bundle directory (forced vs unsplit only)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--sizes", default="32:1,224:3", help="image size:channels, comma-separated")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batches", default="1,64")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per process")
    p.add_argument("--worker", choices=["full", "forced", "heads"])
    p.add_argument("--dir")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup-s", type=float, default=1.0)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    common_opts = ["--threads", str(args.threads), "--seconds", str(args.seconds)]
    if args.bundle:
        configs = [(str(args.bundle), f"bundle {args.bundle}", ("full", "forced"))]
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory()
        configs = []
        for item in args.sizes.split(","):
            size, channels = (int(v) for v in item.split(":"))
            d = make_models(Path(tmp.name) / f"{size}x{channels}", args.backbone, channels, size)
            configs.append((str(d), f"{args.backbone}, {size} px, {channels} channel(s), random weights",
                            ("full", "forced", "heads")))
    print(f"onnxruntime CPU, threads {args.threads or 'default'}; {args.rounds} rounds, one process per runtime, "
          f"alternating; {args.seconds:g} s timed per process")
    for d, label, modes in configs:
        print(label)
        for batch in (int(b) for b in args.batches.split(",")):
            times, _ = rounds_of(__file__, modes, ["--dir", d, "--batch", str(batch), *common_opts], args.rounds)
            print("  " + describe(f"batch {batch:>3}: forced-final / unsplit", summarise(times, "full", "forced")))
            if "heads" in modes:
                print("  " + describe(f"batch {batch:>3}: all heads, one graph / unsplit (the heads)",
                                      summarise(times, "full", "heads")))
                print("  " + describe(f"batch {batch:>3}: forced-final / all heads, one graph (the split)",
                                      summarise(times, "heads", "forced")))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
