"""Per-exit latency on a backend: the time to answer at exit k (every segment up to k, through the real exit loop)
and of the unsplit model on the same backend, measured interleaved in one process; p50 / p90 in milliseconds.
The result is stamped with the bundle it measured (manifest checksum, and the checkpoint behind it)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from edgeexit.bundle import Bundle, load_bundle
from edgeexit.measure import side_by_side
from edgeexit.runtime import EarlyExitRuntime

HOST_BACKENDS = ("onnxruntime", "torch")  # what they measure is this host's CPU


def profile_bundle(bundle: Bundle | Path, *, backend: str | None = None, batch_size: int = 1, rounds: int = 60,
                   calls: int = 5, threads: int | None = None, seed: int = 0) -> dict:
    """Latency table of a bundle on `backend` (default: the bundle's own): cumulative ms to answer at each exit,
    and the unsplit model."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
    runtime = EarlyExitRuntime.open(b, backend, threads=threads)
    full = runtime.reference()
    x = np.random.default_rng(seed).standard_normal((batch_size, *b.input_shape)).astype(np.float32)
    runs = {f"exit{k}": runtime.forced(k).run for k in range(runtime.num_exits)}
    runs["full"] = full.run
    # `rounds` identical batches, every runtime in turn on each: median of `calls` per round, so drift hits
    # every entry alike.
    timing = side_by_side(runs, np.tile(x, (rounds, 1, 1, 1)), batch_size, repeats=calls, warmup=10)
    samples = {name: [1e3 * s for s in seconds] for name, seconds in timing.seconds.items()}
    full_p50 = float(np.median(samples["full"]))
    exits = []
    for k, e in enumerate(b.exits):
        s = samples[f"exit{k}"]
        exits.append({"index": k, "name": e.name, "p50_ms": float(np.median(s)), "p90_ms": float(np.percentile(s, 90)),
                      "time_fraction": float(np.median(s)) / full_p50,
                      "macs_fraction": e.cumulative_macs / b.manifest.full_macs})
    # Answering later can never be cheaper; noise on a cheap segment must not make the table non-monotone.
    latency = np.maximum.accumulate([e["p50_ms"] for e in exits]).tolist()
    name = runtime.backend.name
    return {"target": "cpu" if name in HOST_BACKENDS else b.manifest.target, "bundle_target": b.manifest.target,
            "backend": name, "host": platform.node(), "batch_size": batch_size, "rounds": rounds, "exits": exits,
            "full": {"p50_ms": full_p50, "p90_ms": float(np.percentile(samples["full"], 90))}, "latency_ms": latency,
            "provenance": {"bundle_checksum": b.manifest.checksum,
                           "checkpoint_sha256": b.manifest.provenance.checkpoint_sha256}}
