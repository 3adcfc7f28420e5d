"""Per-exit latency of a bundle on a backend and a device, with the measurement's own noise.

The device side (`edgeexit.device_runner`, or the C++ runner's `--profile`) times every piece in alternating,
rotated rounds; this module turns those raw figures into the table people read and budgets use:

- per exit: cumulative time to answer there (the real exit loop forced to exit k), the segment alone, the head
  alone, the network truncated there (`static`), as p50 / p10 / p90 over rounds;
- the unsplit model on the same backend in the same run, timed twice (`full`, `full_repeat`): the two are the same
  work, so their ratio is the noise of this very run. `noise` is the larger of |p50 ratio - 1| and the spread of
  the per-round ratios over sqrt(rounds); above `NOISE_BOUND` the profile says it cannot be trusted;
- the forced-final overhead (answering at the last exit through the split model vs the unsplit one) next to what
  the heads explain: the unsplit model's p10..p90 plus the intermediate heads' p50s.

Results are stamped with the device, backend, versions and the bundle's checksum.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgeexit.bundle import Bundle, load_bundle
from edgeexit.devices import Device, RunnerOptions, parse_device, run_profile
from edgeexit.errors import DeviceError

FORMAT = "edgeexit-profile/2"
HOST_BACKENDS = ("onnxruntime", "torch")  # run locally, they measure this host's CPU (target "cpu")
NOISE_BOUND = 0.03  # a same-work ratio further than 3 % from 1: the figures of this run are not trusted


def stats(ms) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    p10, p50, p90 = (float(v) for v in np.percentile(a, [10, 50, 90]))
    return {"p50_ms": p50, "p10_ms": p10, "p90_ms": p90, "spread": (p90 - p10) / p50 if p50 > 0 else math.inf,
            "rounds": int(a.size)}


def noise_of(full: list[float], repeat: list[float]) -> dict:
    """The null test: the same model timed twice in the same rounds."""
    r = np.asarray(repeat, dtype=np.float64) / np.asarray(full, dtype=np.float64)
    null = float(np.median(repeat) / np.median(full))
    p10, p90 = np.percentile(r, [10, 90])
    noise = max(abs(null - 1.0), float(p90 - p10) / math.sqrt(len(r)))
    return {"null_ratio": null, "round_ratio_p10": float(p10), "round_ratio_p90": float(p90), "noise": noise,
            "bound": NOISE_BOUND, "trusted": noise <= NOISE_BOUND}


def summarise_batch(measured: dict[str, list[float]], bundle: Bundle) -> dict:
    m = bundle.manifest
    full = stats(measured["full"])
    noise = noise_of(measured["full"], measured["full_repeat"]) if "full_repeat" in measured else {
        # a runner without the null test: fall back on the round-to-round spread of the unsplit model
        "null_ratio": None, "noise": full["spread"] / math.sqrt(full["rounds"]), "bound": NOISE_BOUND,
        "trusted": full["spread"] / math.sqrt(full["rounds"]) <= NOISE_BOUND}
    exits = []
    for e in bundle.exits:
        k = e.index
        row = {"index": k, "name": e.name, "cumulative": stats(measured[f"exit{k}"]),
               "segment": stats(measured[f"segment{k}"]) if f"segment{k}" in measured else None,
               "head": stats(measured[f"head{k}"]) if f"head{k}" in measured else None,
               "static": stats(measured[f"static{k}"]) if f"static{k}" in measured else None,
               "macs_fraction": e.cumulative_macs / m.full_macs}
        row["time_fraction"] = row["cumulative"]["p50_ms"] / full["p50_ms"]
        if row["static"] is not None:
            row["static_fraction"] = row["static"]["p50_ms"] / full["p50_ms"]
        exits.append(row)
    heads = sum(r["head"]["p50_ms"] for r in exits if r["head"] is not None)
    final = exits[-1]["cumulative"]["p50_ms"]
    lo, hi = full["p10_ms"] + heads, full["p90_ms"] + heads
    return {
        "full": full, "exits": exits, "noise": noise,
        # answering later is never cheaper: the cumulative table is made monotone for budgets
        "latency_ms": np.maximum.accumulate([r["cumulative"]["p50_ms"] for r in exits]).tolist(),
        "forced_final": {"ratio": final / full["p50_ms"], "heads_ms": heads, "heads_fraction": heads / full["p50_ms"],
                         "explained_range_ms": [lo, hi], "explained": bool(lo <= final <= hi),
                         "unexplained_ms": float(final - hi if final > hi else final - lo if final < lo else 0.0)},
    }


def summarise(raw: dict, bundle: Bundle, device: str = "local") -> dict:
    """The profile people read (and millisecond budgets use) from a device's raw measurements."""
    m = bundle.manifest
    if raw.get("bundle_checksum") != m.checksum:
        raise DeviceError("the device profiled another bundle", got=raw.get("bundle_checksum"), expected=m.checksum,
                          hint="profile again: the bundle changed while it was measured")
    batches = {b: summarise_batch(measured, bundle) for b, measured in raw["batches"].items()}
    first = min(batches, key=int)
    head = batches[first]
    local_host = device == "local" and raw["backend"] in HOST_BACKENDS
    return {
        "format": FORMAT,
        "target": "cpu" if local_host else m.target,
        "bundle_target": m.target, "backend": raw["backend"], "runner": raw["runner"], "device": device,
        "host": raw["device"].get("hostname"), "device_info": raw["device"], "versions": raw["versions"],
        "rounds": raw["rounds"], "calls": raw["calls"], "warmup": raw["warmup"], "peak_rss_mb": raw.get("peak_rss_mb"),
        "trusted": all(b["noise"]["trusted"] for b in batches.values()),
        "noise": {b: s["noise"] for b, s in batches.items()},
        "batches": batches,
        # the batch-1 (smallest batch) table, flat: what millisecond budgets and older readers use
        "batch_size": int(first),
        "exits": [{"index": r["index"], "name": r["name"], "p50_ms": r["cumulative"]["p50_ms"],
                   "p90_ms": r["cumulative"]["p90_ms"], "time_fraction": r["time_fraction"],
                   "macs_fraction": r["macs_fraction"]} for r in head["exits"]],
        "full": {"p50_ms": head["full"]["p50_ms"], "p90_ms": head["full"]["p90_ms"]},
        "latency_ms": head["latency_ms"],
        "provenance": {"bundle_checksum": m.checksum, "bundle_content_sha256": m.content_sha256,
                       "checkpoint_sha256": m.provenance.checkpoint_sha256},
        "raw": raw,
    }


def profile_bundle(bundle: Bundle | Path, *, backend: str | None = None, device: str | Device | None = None,
                   batches: list[int] | None = None, rounds: int = 30, calls: int = 3, warmup: int = 5,
                   threads: int | None = None, runner: str | None = None, runner_binary: Path | None = None) -> dict:
    """Measure `bundle` on `device` (default: this machine, in a fresh process) with `backend` (default: the
    bundle's own) and summarise."""
    b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
    dev = device if isinstance(device, Device) else parse_device(device, runner)
    options = RunnerOptions(backend, list(batches or []), rounds, calls, warmup, threads)
    raw = run_profile(dev, b.root, options, runner_binary=runner_binary)
    return summarise(raw, b, dev.describe())
