"""How the early-exit runtime's cost grows with the exit count (2-7), the batch size (1-64) and the input size
(32 -> 224 px): every sample forced to the final exit against the unsplit model, on onnxruntime.

Each configuration is a ResNet-18 (random weights: the time does not depend on them; tiny_cnn with --quick) split
into segments and lowered to ONNX here, then timed in its own process by edgeexit.timing's rules (one pool,
warm-up, rotated rounds, each figure the median of --calls calls after timing.PRIME_MS of primed ones, the unsplit
model twice as the null test). Printed: forced / unsplit with its null test, and the cost per segment boundary
(forced - unsplit) / (exits - 1) in ms. At batch 1 the runtime runs the bundle's batch-1 form (one graph with an If
per exit test, as an export for cpu ships it: edgeexit.export.fuse_onnx); the segment loop it replaces is timed
beside it ("loop"). Also drawn: RESULTS/scaling.png (three panels).

    python tools/bench/scaling.py                 # ResNet-18: exits 2-7 at 32 px, batch 1-64, 32-224 px
    python tools/bench/scaling.py --quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

MAX_BATCH = 64


def exits_for(n: int, blocks: int) -> list[int]:
    """Block indices for n exits (the final classifier is the last): n - 1 spread over the first blocks - 1."""
    return [blocks // 2 - 1] if n == 2 else sorted({int(round(v)) for v in np.linspace(0, blocks - 2, n - 1)})


def make_models(out: Path, backbone: str, exits: list[int], size: int) -> Path:
    """The segments and the unsplit model of a random-weight network, lowered to ONNX, with what the worker needs."""
    import torch

    from edgeexit.export import split_programs
    from edgeexit.export.fuse_onnx import fuse_segments
    from edgeexit.export.lower_onnx import lower_onnx
    from edgeexit.models import ModelConfig, build_model
    from edgeexit.models.costs import count_costs
    from edgeexit.models.scores import score_fn_torch

    if (out / "meta.json").is_file():
        return out
    torch.manual_seed(0)
    net = build_model(ModelConfig(backbone=backbone, in_channels=1, image_size=size, exits=exits)).eval()
    programs, reference = split_programs(net, score_fn_torch("max_softmax"), (1, size, size), max_batch=MAX_BATCH)
    meta = {"input_shape": [1, size, size], "exits": net.num_exits,
            "cumulative_macs": count_costs(net, 1, size).cumulative_macs, "segments": []}
    for p in [*programs, reference]:
        lower_onnx(p, out / f"{p.name}.onnx", check=False)
        meta["segments"].append({"name": p.name, "inputs": [i.model_dump() for i in p.inputs],
                                 "outputs": [o.model_dump() for o in p.outputs]})
    fuse_segments([out / f"{p.name}.onnx" for p in programs], out / "fused.onnx", (1, size, size),
                  programs[-1].outputs[0].shape[1])
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def worker(p: dict) -> dict:
    from edgeexit.bundle import TensorSpec
    from edgeexit.bundle.manifest import Fused
    from edgeexit.runtime import EarlyExitRuntime, make_backend
    from edgeexit.timing import PRIME_MS, measure, pin_threads

    setup = pin_threads("onnxruntime", p["threads"])
    be = make_backend("onnxruntime", threads=setup["threads"])
    d = Path(p["dir"])
    meta = json.loads((d / "meta.json").read_text())
    segs = {m["name"]: be.open_segment(d / f"{m['name']}.onnx", None, [TensorSpec(**i) for i in m["inputs"]],
                                       [TensorSpec(**o) for o in m["outputs"]], MAX_BATCH) for m in meta["segments"]}
    shape = tuple(meta["input_shape"])
    chain = [segs[f"seg{k}"] for k in range(meta["exits"])]
    classes = chain[-1].outputs[0].shape[1]
    fused = be.open_segment(d / "fused.onnx", None, *Fused.io(shape, len(chain), classes), 1)
    rt = EarlyExitRuntime(be, chain, [None] * len(chain), meta["cumulative_macs"], shape, classes, MAX_BATCH,
                          reference=segs["reference"], fused=fused)
    full, loop = rt.reference(), rt.segment_loop()
    x = np.random.default_rng(0).standard_normal((p["batch"], *shape)).astype(np.float32)
    entries = {"full": lambda: full.run(x), "forced": lambda: rt.run(x)}
    if p["batch"] == 1:  # the segment loop that the batch-1 form replaces
        entries["loop"] = lambda: loop.run(x)
    m = measure(entries, rounds=p["rounds"], calls=p["calls"], prime_ms=PRIME_MS, warmup=3,
                setup={**setup, "batch": p["batch"]})
    full_ms, forced_ms = m.stats("full")["p50_ms"], m.stats("forced")["p50_ms"]
    return {"exits": meta["exits"], "size": shape[-1], "batch": p["batch"], "forced": m.ratio("forced"),
            "loop": m.ratio("loop") if "loop" in entries else None,
            "full_ms": full_ms, "boundary_ms": (forced_ms - full_ms) / max(1, meta["exits"] - 1),
            "measurement": m.to_json()}


def plot(path: Path, sweeps: dict[str, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, (axis, rows) in zip(axes, sweeps.items()):
        xs = [r[axis] for r in rows]
        ys = [r["forced"]["ratio"] for r in rows]
        lo = [r["forced"]["ratio"] - r["forced"]["iqr"][0] for r in rows]
        hi = [r["forced"]["iqr"][1] - r["forced"]["ratio"] for r in rows]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3,
                    label="forced final / unsplit (IQR); batch 1: the one-graph form")
        looped = [(x, r["loop"]["ratio"]) for x, r in zip(xs, rows) if r.get("loop")]
        if looped:
            ax.plot(*zip(*looped), marker="s", ls="--", color="tab:orange", label="batch 1 through the segment loop")
        for x, y, r in zip(xs, ys, rows):
            if r["forced"]["noisy"]:
                ax.annotate("noisy", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", color="red")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xlabel({"exits": "exit count", "batch": "batch size", "size": "input size (px)"}[axis])
        if axis == "batch":
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(v) for v in xs])
        ax.grid(alpha=0.3)
    medians = [r[k]["ratio"] for rows in sweeps.values() for r in rows for k in ("forced", "loop") if r.get(k)]
    # the scale follows the medians: one stalled round's IQR on a loaded machine must not flatten every curve
    axes[0].set_ylim(min(0.9, 0.95 * min(medians)), 1.15 * max(medians) + 0.05)
    axes[0].set_ylabel("time / unsplit model")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle("edgeexit runtime cost on onnxruntime (every sample forced to the final exit)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    p = suite.parser(__doc__, "scaling")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--png", type=Path, default=suite.RESULTS / "scaling.png")
    a = p.parse_args()
    if a.worker:
        suite.answer(worker(json.loads(a.worker)))
        return
    if a.quick:
        backbone, blocks, counts, batches, sizes, base_size = "tiny_cnn", 3, [2, 3], [1, 8], [16, 32], 16
        a.rounds, a.calls = min(a.rounds, 3), min(a.calls, 2)
    else:
        backbone, blocks, counts, batches, sizes, base_size = "resnet18", 8, range(2, 8), [1, 4, 16, 64], \
            [32, 64, 128, 224], 32
    base = suite.scratch(a)
    default_exits = exits_for(4 if not a.quick else 3, blocks)

    done: dict[tuple, dict] = {}  # the default configuration sits on all three sweeps: timed once

    def one(exits: list[int], size: int, batch: int) -> dict:
        key = (tuple(exits), size, batch)
        if key not in done:
            done[key] = timed(exits, size, batch)
        return done[key]

    def timed(exits: list[int], size: int, batch: int) -> dict:
        d = make_models(base / f"{backbone}-{'_'.join(map(str, exits))}-{size}px", backbone, exits, size)
        return suite.in_worker(__file__, {"dir": str(d), "batch": batch, "threads": a.threads, "rounds": a.rounds,
                                          "calls": a.calls})

    sweeps = {"exits": [one(exits_for(n, blocks), base_size, 1) for n in counts],
              "batch": [one(default_exits, base_size, b) for b in batches],
              "size": [one(default_exits, s, 1) for s in sizes]}
    rows = [[axis, r["exits"], r["batch"], f"{r['size']} px", *suite.ratio_cells(r["forced"]),
             f"{r['loop']['ratio']:.3f}" if r.get("loop") else "-", f"{1e3 * r['boundary_ms']:.1f}",
             f"{r['full_ms']:.3f}"] for axis, rs in sweeps.items() for r in rs]
    suite.table(f"runtime cost, {backbone} on onnxruntime: forced final / unsplit",
                ["sweep", "exits", "batch", "input", *suite.RATIO_COLUMNS, "segment loop (batch 1)",
                 "µs per boundary", "unsplit ms"], rows, note="batch 1: the one-graph form the runtime runs there")
    plot(a.png, sweeps)
    suite.write_json(a.json, {"backbone": backbone, "sweeps": sweeps, "png": str(a.png)})


if __name__ == "__main__":
    main()
