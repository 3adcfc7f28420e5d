"""What splitting costs: every sample forced to the final exit, against the unsplit model, per backend, at 32 px and
224 px, with the exit heads' share split out.

    forced / unsplit            the whole overhead of the early-exit runtime when no sample leaves early
    heads / unsplit             the intermediate heads (and scores) alone, timed as the bundle's head probes
    forced / (unsplit + heads)  what the split itself costs: session calls, graph boundaries, the exit loop

At batch 1 an onnxruntime bundle runs a sample through its batch-1 form (one graph, an If node per exit test:
edgeexit.export.fuse_onnx); the segment loop it replaces is timed beside it in the same rounds (form "segment loop").

One process per (bundle, backend), edgeexit.timing's rules (one pool, warm-up, rotated rounds, each figure the
median of --calls calls after timing.PRIME_MS of primed ones, the unsplit model timed twice as the null test).
Bundles: ResNet-18 (random weights: the time does not depend on them) trained one step and exported for cpu
(onnxruntime, torch) and android (ExecuTorch) at 32 px x 1 channel and 224 px x 3 channels, or --bundle; --quick: the
tiny build's bundles.
Goal at batch 1 on onnxruntime: forced / unsplit <= 1.05 at 32 px and <= 1.02 at 224 px.

    python tools/bench/overhead.py                      # builds the ResNet-18 bundles (minutes)
    python tools/bench/overhead.py --bundle runs/default/bundle
    python tools/bench/overhead.py --quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

QUICK_BACKENDS = ["onnxruntime", "executorch"]

# (size, dataset): Fashion-MNIST is 1 channel like the default build, the synthetic task 3 channels like ImageNet
SIZES = [(32, "fashion-mnist"), (224, "synthetic")]


def worker(p: dict) -> dict:
    from edgeexit.runtime.backend import segment_file
    from edgeexit.timing import PRIME_MS, measure

    b, rt, setup = suite.open_runtime(p["bundle"], p["backend"], p["threads"])
    be, full, forced = rt.backend, rt.reference(), rt.forced(rt.num_exits - 1)
    rows = []
    for batch in p["batches"]:
        x = np.random.default_rng(0).standard_normal((batch, *b.input_shape)).astype(np.float32)
        entries = {"full": lambda: full.run(x), "forced": lambda: forced.run(x)}
        fused = forced.fused and batch == 1
        if fused:  # the form the batch-1 graph replaces, side by side
            loop = forced.segment_loop()
            entries["forced_loop"] = lambda: loop.run(x)
        feed = be.upload(x)
        for k, seg in enumerate(rt.segments[:-1]):  # each head on segment k's real features
            feed = be.upload(np.ascontiguousarray(be.download(seg.run({seg.inputs[0].name: feed})["features"])))
            probe = b.exits[k].head
            if probe is not None:
                path, ref = segment_file(b, probe.segment, be.format, f"exit {k}'s head")
                head = be.open_segment(path, ref, probe.inputs, probe.outputs, b.manifest.batch.max)
                entries[f"head{k}"] = lambda head=head, f=feed: (head.run({head.inputs[0].name: f}), be.synchronize())
        m = measure(entries, rounds=p["rounds"], calls=p["calls"], warmup=3, prime_ms=PRIME_MS,
                    setup={**setup, "batch": batch})
        full_ms = m.stats("full")["p50_ms"]
        heads_ms = sum(m.stats(n)["p50_ms"] for n in entries if n.startswith("head"))
        forms = [("fused" if fused else "segment loop", "forced")] + ([("segment loop", "forced_loop")] if fused else [])
        for form, name in forms:
            forced_r = m.ratio(name)
            rows.append({"batch": batch, "form": form, "forced": forced_r, "heads_fraction": heads_ms / full_ms,
                         "split": forced_r["ratio"] * full_ms / (full_ms + heads_ms), "full_ms": full_ms,
                         "measurement": m.to_json() if name == "forced" else None})
    return {"bundle": str(p["bundle"]), "backend": setup["backend"], "input": list(b.input_shape),
            "exits": rt.num_exits, "rows": rows}


def random_weight_bundles(a) -> list[Path]:
    """ResNet-18 trained one step on synthetic data at each size, exported for cpu and
    android: the overhead does not depend on the weights."""
    base = suite.scratch(a)
    if a.quick:  # the suite's one tiny build: checks the script runs
        run = suite.tiny_run(base)
        return [suite.exported(run, "cpu"), suite.exported(run, "android", "fp32")]
    out = []
    for size, dataset in SIZES:
        run = base / f"random-{size}px"
        if not (run / "calibration.json").is_file():
            data = ["--dataset", dataset, "--image-size", str(size), "--limit-train", "16", "--limit-val", "32",
                    "--limit-test", "32", "--backbone", "resnet18"]
            suite.edgeexit("train", "--run-dir", str(run), "--epochs", "1", "--max-steps", "1", *data)
            suite.edgeexit("calibrate", "--run-dir", str(run))
        out += [suite.exported(run, "cpu"), suite.exported(run, "android", "fp32")]
    return out


def main() -> None:
    from early_exit import plan

    p = suite.parser(__doc__, "overhead")
    p.add_argument("--bundle", type=Path, action="append", help="a bundle (repeat for several) instead of the "
                   "random-weight ResNet-18 ones")
    p.add_argument("--backends", help="comma-separated (default: every backend here that runs each bundle)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--batches", default="1,64", help="batch sizes (capped at each bundle's largest)")
    a = p.parse_args()
    if a.worker:
        suite.answer(worker(json.loads(a.worker)))
        return
    from edgeexit.bundle import load_bundle

    if a.quick:
        a.rounds, a.calls = min(a.rounds, 3), min(a.calls, 2)
    paths = a.bundle or random_weight_bundles(a)
    results = []
    if a.quick and not a.backends:  # one code path per backend family is enough to show the script runs
        a.backends = ",".join(QUICK_BACKENDS)
    for path, backend in plan(paths, a.backends.split(",") if a.backends else None):
        top = load_bundle(path).manifest.batch.max
        batches = sorted({min(int(v), top) for v in a.batches.split(",")})
        results.append(suite.in_worker(__file__, {"bundle": str(path), "backend": backend, "threads": a.threads,
                                                  "rounds": a.rounds, "calls": a.calls, "batches": batches}))
    rows = [[r["backend"], "x".join(map(str, r["input"][::-1])), row["batch"], row["form"],
             *suite.ratio_cells(row["forced"]),
             row["heads_fraction"], row["split"], f"{row['full_ms']:.3f}"] for r in results for row in r["rows"]]
    suite.table("forced final exit / unsplit model", ["backend", "input", "batch", "form", *suite.RATIO_COLUMNS,
                                                      "heads / unsplit", "forced / (unsplit + heads)", "unsplit ms"],
                rows, note="goal (onnxruntime, batch 1): <= 1.05 at 32 px, <= 1.02 at 224 px")
    suite.write_json(a.json, {"results": results})


if __name__ == "__main__":
    main()
