"""Early exit vs the unsplit model, per backend, at batch 1 and the target's largest batch, with accuracies.

One process per (bundle, backend); inside it the early-exit runtime and the bundle's unsplit reference model share
one runtime and one thread pool, and are timed by edgeexit.timing: warm-up, alternating rotated rounds, each round
one pass over the same test images at the given batch, the unsplit model timed twice as the null test. Printed per
row: accuracy of both, the mean MACs fraction, the time ratio early exit / unsplit (median over rounds, IQR) and the
null test; a ratio whose null test exceeds 3 % reads NOISY. Bundles: --bundle (repeatable), or exported from
--checkpoint for cpu (onnxruntime, torch), android fp32 and android int8 (ExecuTorch); --quick: a tiny build.
Goal (ResNet-18, Fashion-MNIST, 32 px, <= 1 pt accuracy loss): ratio <= the mean MACs fraction.

    python tools/bench/early_exit.py --bundle runs/default/bundle
    python tools/bench/early_exit.py --checkpoint runs/default/checkpoint.pt        # cpu, android fp32 + int8
    python tools/bench/early_exit.py --quick
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

TARGETS = [("cpu", None), ("android", "fp32"), ("android", "int8")]


def worker(p: dict) -> dict:
    from edgeexit.pipeline import test_split
    from edgeexit.timing import measure

    b, rt, setup = suite.open_runtime(p["bundle"], p["backend"], p["threads"])
    full = rt.reference()
    x, y = test_split(b, "test", p["samples"])
    res = rt.run(x)
    full_pred = full.run(x).argmax(1)
    rows = []
    for batch in p["batches"]:
        m = measure({"full": suite.passes(full.run, x, batch), "early_exit": suite.passes(rt.run, x, batch)},
                    rounds=p["rounds"], calls=p.get("calls", 1), warmup=1, prime=0, setup={**setup, "batch": batch})
        rows.append({"batch": batch, "early_exit": m.ratio("early_exit"), "measurement": m.to_json(),
                     "full_ms_per_image": m.stats("full")["p50_ms"] / len(x)})
    return {"bundle": str(p["bundle"]), "backend": setup["backend"], "precision": b.manifest.precision,
            "images": len(x), "accuracy_full": float((full_pred == y).mean()),
            "accuracy_early_exit": float((res.predictions == y).mean()),
            "macs_fraction": float(res.macs.mean() / b.manifest.full_macs),
            "exit_histogram": res.exit_histogram(rt.num_exits), "rows": rows}


def plan(paths: list[Path], backends: list[str] | None) -> list[tuple[Path, str]]:
    """(bundle, backend) pairs: every backend that works here and runs the bundle's own format (an android bundle's
    ONNX copy is for emulation, not a backend of its own), and the torch programs (.pt2, every bundle carries them)
    of the first bundle only; or just the backends named."""
    from edgeexit.bundle import load_bundle
    from edgeexit.runtime import available_backends
    from edgeexit.runtime.registry import REGISTRY

    out, torch_done = [], False
    for path in paths:
        m = load_bundle(path).manifest
        names = [n for n in available_backends(m)
                 if REGISTRY[n].format == m.format or (REGISTRY[n].format == "pt2" and not torch_done)]
        torch_done = torch_done or any(REGISTRY[n].format == "pt2" for n in names)
        out += [(path, n) for n in names if backends is None or n in backends]
    return out


def main() -> None:
    p = suite.parser(__doc__, "early_exit")
    p.add_argument("--bundle", type=Path, action="append", help="a bundle (repeat for several)")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint to export the cpu and android bundles from")
    p.add_argument("--backends", help="comma-separated (default: every backend here that runs each bundle)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--samples", type=int, default=1000, help="test images in every pass")
    p.add_argument("--calls", type=int, default=1, help="passes per entry and round (their median)")
    p.add_argument("--batches", default=None, help="default: 1 and each bundle's largest")
    a = p.parse_args()
    if a.worker:
        suite.answer(worker(json.loads(a.worker)))
        return
    from edgeexit.bundle import load_bundle

    if a.quick:
        a.rounds, a.samples = min(a.rounds, 3), min(a.samples, 64)
    results = []
    for path, backend in plan(suite.bundles(a, TARGETS), a.backends.split(",") if a.backends else None):
        m = load_bundle(path).manifest
        batches = [int(v) for v in a.batches.split(",")] if a.batches else sorted({1, m.batch.max})
        results.append(suite.in_worker(__file__, {"bundle": str(path), "backend": backend, "threads": a.threads,
                                                  "samples": a.samples, "rounds": a.rounds, "batches": batches,
                                                  "calls": a.calls}))
    rows = [[f"{r['backend']} {r['precision']}", row["batch"], f"{100 * r['accuracy_full']:.2f}",
             f"{100 * r['accuracy_early_exit']:.2f}", r["macs_fraction"], *suite.ratio_cells(row["early_exit"]),
             f"{row['full_ms_per_image']:.3f}"] for r in results for row in r["rows"]]
    suite.table("early exit / unsplit model, time per pass over the same test images",
                ["backend", "batch", "acc full %", "acc early exit %", "MACs fraction", *suite.RATIO_COLUMNS,
                 "unsplit ms/img"], rows, note="goal: ratio <= MACs fraction at <= 1 pt accuracy loss")
    suite.write_json(a.json, {"results": results})


if __name__ == "__main__":
    main()
