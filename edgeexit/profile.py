"""Per-exit latency on the target: the time to answer at exit k (every segment up to k, through the real exit
loop) and of the unsplit model, measured interleaved in one process; p50 / p90 in milliseconds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgeexit.bundle import Bundle, load_bundle
from edgeexit.measure import side_by_side
from edgeexit.runtime import EarlyExitRuntime, OrtModel


def forced(runtime: EarlyExitRuntime, k: int) -> EarlyExitRuntime:
    """The runtime with every sample answering at exit k."""
    thresholds = [math.inf] * runtime.num_exits
    thresholds[k] = -math.inf
    return runtime.with_thresholds(thresholds)


def profile_bundle(bundle: Bundle | Path, *, batch_size: int = 1, rounds: int = 60, calls: int = 5,
                   threads: int | None = None, seed: int = 0) -> dict:
    """Latency table of a bundle on onnxruntime CPU: cumulative ms to answer at each exit, and the full model."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
    runtime = EarlyExitRuntime.from_bundle(b, threads=threads)
    full = OrtModel(b.path(b.manifest["reference"]), threads=threads)
    x = np.random.default_rng(seed).standard_normal((batch_size, *b.input_shape)).astype(np.float32)
    runs = {f"exit{k}": forced(runtime, k).run for k in range(runtime.num_exits)}
    runs["full"] = full.run
    # `rounds` identical batches, every runtime in turn on each: median of `calls` per round, so drift hits
    # every entry alike.
    timing = side_by_side(runs, np.tile(x, (rounds, 1, 1, 1)), batch_size, repeats=calls, warmup=10)
    samples = {name: [1e3 * s for s in seconds] for name, seconds in timing.seconds.items()}
    full_p50 = float(np.median(samples["full"]))
    exits = []
    for k, e in enumerate(b.exits):
        s = samples[f"exit{k}"]
        exits.append({"index": k, "name": e["name"], "p50_ms": float(np.median(s)), "p90_ms": float(np.percentile(s, 90)),
                      "time_fraction": float(np.median(s)) / full_p50,
                      "macs_fraction": e["cumulative_macs"] / b.manifest["full_macs"]})
    # Answering later can never be cheaper; noise on a cheap segment must not make the table non-monotone.
    latency = np.maximum.accumulate([e["p50_ms"] for e in exits]).tolist()
    # The times are of this host's onnxruntime CPU, whatever target the bundle is for: a millisecond budget
    # for another target must not be calibrated with them.
    return {"target": "cpu", "bundle_target": b.manifest["target"], "backend": "onnxruntime-cpu",
            "batch_size": batch_size, "rounds": rounds, "exits": exits,
            "full": {"p50_ms": full_p50, "p90_ms": float(np.percentile(samples["full"], 90))}, "latency_ms": latency}
