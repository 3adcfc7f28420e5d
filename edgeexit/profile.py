"""Per-exit latency of a bundle on a backend and a device, with the measurement's own noise.

The device side (`edgeexit.device_runner`, or the C++ runner's `--profile`) times every piece in alternating,
rotated rounds; this module turns those raw figures into the table people read and budgets use:

- per exit: cumulative time to answer there (the real exit loop forced to exit k), the same leaving through exit k's
  test (`answer`, every exit but the last), the segment alone, the head alone, the network truncated there
  (`static`), as p50 / p10 / p90 over rounds;
- the unsplit model on the same backend in the same run, timed twice (`full`, `full_repeat`): the two are the same
  work, so their ratio is the noise of this very run. `noise` is the larger of |p50 ratio - 1| and the spread of
  the per-round ratios over sqrt(rounds); above `NOISE_BOUND` the profile says it cannot be trusted;
- the forced-final overhead (answering at the last exit through the split model vs the unsplit one) next to what
  the heads explain: the unsplit model's p10..p90 plus the intermediate heads' p50s.

Results are stamped with the device, backend, thread count, versions and the bundle's checksum. The timing rules
(one thread pool, warm-up, rotated rounds, the null test) are `edgeexit.timing`'s, the same as every benchmark's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from edgeexit.bundle import Bundle, load_bundle
from edgeexit.devices import (
    MAX_DOC_BYTES,
    BatchKey,
    Count,
    Device,
    DeviceInfo,
    DeviceProfile,
    Ms,
    RunnerOptions,
    Text,
    Word,
    _no_constant,
    _Strict,
    parse_device,
    run_profile,
    validation_summary,
)
from edgeexit.errors import ConfigError, DeviceError
from edgeexit.runtime.registry import host_target
from edgeexit.timing import NOISE_BOUND, null_test, stats

FORMAT = "edgeexit-profile/2"


Ratio = Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
Signed = Annotated[float, Field(ge=-1e9, le=1e9, allow_inf_nan=False)]
Sha = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]


class Stats(_Strict):
    p50_ms: Ms
    p10_ms: Ms
    p90_ms: Ms
    p25_ms: Ms | None = None  # quartiles: profiles written before edgeexit.timing have none
    p75_ms: Ms | None = None
    spread: Ratio
    rounds: Annotated[int, Field(ge=1, le=1_000_000)]

    @model_validator(mode="after")
    def _ordered(self) -> "Stats":
        order = [v for v in (self.p10_ms, self.p25_ms, self.p50_ms, self.p75_ms, self.p90_ms) if v is not None]
        if order != sorted(order):
            raise ValueError("percentiles out of order (p10 <= p25 <= p50 <= p75 <= p90)")
        return self


class Noise(_Strict):
    null_ratio: Ratio | None
    round_ratio_p10: Ratio | None = None
    round_ratio_p90: Ratio | None = None
    noise: Ratio
    bound: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    trusted: bool

    @model_validator(mode="after")
    def _trusted_means_within_bound(self) -> "Noise":
        if self.trusted != (self.noise <= self.bound):  # trust is a consequence of the figures, never a claim
            raise ValueError(f"trusted={self.trusted} with noise {self.noise} and bound {self.bound}")
        return self


class ExitRow(_Strict):
    index: Annotated[int, Field(ge=0, le=255)]
    name: Name
    cumulative: Stats
    answer: Stats | None = None  # the loop answering at this exit through its exit test (not at the last exit)
    segment: Stats | None
    head: Stats | None
    static: Stats | None
    macs_fraction: Ratio
    time_fraction: Ratio
    static_fraction: Ratio | None = None


class ForcedFinal(_Strict):
    ratio: Ratio
    heads_ms: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
    heads_fraction: Ratio
    explained_range_ms: Annotated[list[Ratio], Field(min_length=2, max_length=2)]
    explained: bool
    unexplained_ms: Signed


class BatchTable(_Strict):
    full: Stats
    exits: Annotated[list[ExitRow], Field(min_length=1, max_length=256)]
    noise: Noise
    latency_ms: Annotated[list[Ms], Field(min_length=1, max_length=256)]
    forced_final: ForcedFinal

    @model_validator(mode="after")
    def _one_row_per_exit(self) -> "BatchTable":
        if [e.index for e in self.exits] != list(range(len(self.exits))) or len(self.latency_ms) != len(self.exits):
            raise ValueError("exits must be 0..E-1 in order with one latency per exit")
        if any(b < a for a, b in zip(self.latency_ms, self.latency_ms[1:])):
            raise ValueError("latency_ms must not decrease (answering later is never cheaper)")
        return self


class FlatExit(_Strict):
    index: Annotated[int, Field(ge=0, le=255)]
    name: Name
    p50_ms: Ms
    p90_ms: Ms
    time_fraction: Ratio
    macs_fraction: Ratio


class FullMs(_Strict):
    p50_ms: Ms
    p90_ms: Ms


class Provenance(_Strict):
    bundle_checksum: Sha
    bundle_content_sha256: Sha
    checkpoint_sha256: Sha | None


class EtdumpOperator(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]  # kernel names run long
    ms: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]


class EtdumpMethod(_Strict):
    method: Name
    ms: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
    p90_ms: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)]
    operators: Annotated[list[EtdumpOperator], Field(max_length=4096)]
    operator_count: Count


class Etdump(_Strict):
    batch_size: Annotated[int, Field(ge=1)]
    runs: Annotated[int, Field(ge=1)]
    methods: Annotated[list[EtdumpMethod], Field(max_length=1024)]


class Profile(_Strict):
    """profile.json (RUN/profile.json, a bundle's report/profile.json): what `summarise` writes, typed and bounded."""

    format: Literal["edgeexit-profile/2"]
    target: Word
    bundle_target: Word
    backend: Word
    runner: Literal["python", "cpp"]
    device: Text
    host: Text | None
    device_info: DeviceInfo
    versions: Annotated[dict[Word, Text], Field(max_length=64)]
    rounds: Annotated[int, Field(ge=1, le=1_000_000)]
    calls: Annotated[int, Field(ge=1, le=1_000_000)]
    warmup: Count
    threads: Annotated[int, Field(ge=1, le=4096)] | None = None  # the one intra-op pool everything ran on
    peak_rss_mb: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] | None
    trusted: bool
    noise: Annotated[dict[BatchKey, Noise], Field(min_length=1, max_length=64)]
    batches: Annotated[dict[BatchKey, BatchTable], Field(min_length=1, max_length=64)]
    batch_size: Annotated[int, Field(ge=1, le=9_999_999)]
    exits: Annotated[list[FlatExit], Field(min_length=1, max_length=256)]
    full: FullMs
    latency_ms: Annotated[list[Ms], Field(min_length=1, max_length=256)]
    provenance: Provenance
    raw: DeviceProfile
    etdump: Etdump | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Profile":
        if set(self.noise) != set(self.batches) or str(self.batch_size) not in self.batches:
            raise ValueError("noise and batches must name the same batch sizes, batch_size among them")
        if self.trusted != all(n.trusted for n in self.noise.values()):
            raise ValueError("trusted must be true exactly when every batch's noise is within its bound")
        if any(self.noise[b] != t.noise for b, t in self.batches.items()):
            raise ValueError("noise differs from the batch tables' own")
        table = self.batches[str(self.batch_size)]
        if len({len(t.exits) for t in self.batches.values()}) != 1 or len(self.exits) != len(table.exits) \
                or self.latency_ms != table.latency_ms:
            raise ValueError("every table must have the same exits, and the flat table be batch_size's")
        return self


def read_profile_json(path: Path) -> dict:
    """profile.json checked against `Profile`, as a plain dict: the one reader of that file (report, calibration
    with a millisecond budget). Not JSON, a list, bad UTF-8, a missing key, NaN or a negative time: a ConfigError."""
    path = Path(path)
    what = f"the profile {path}"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what}", got=err.strerror, expected="a readable file",
                          hint="edgeexit profile --run-dir RUN writes it") from None
    if len(data) > MAX_DOC_BYTES:
        raise ConfigError(f"{what} is too large", got=f"{len(data)} bytes", expected=f"<= {MAX_DOC_BYTES} bytes")
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ConfigError(f"{what} is not JSON", got=str(err)[:200], expected="one UTF-8 JSON document",
                          hint="profile again: edgeexit profile --run-dir RUN") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} is not a JSON object", got=type(doc).__name__, expected=f"an object of format {FORMAT}",
                          hint="profile again: edgeexit profile --run-dir RUN")
    if doc.get("format") != FORMAT:
        raise ConfigError(f"{what} is of another format", got=str(doc.get("format"))[:80], expected=FORMAT,
                          hint="profile again with this edgeexit: edgeexit profile --run-dir RUN")
    try:
        return _plain(Profile.model_validate(doc))
    except ValidationError as err:
        raise ConfigError(f"{what} does not hold what a profile must", got=validation_summary(err),
                          expected=f"{FORMAT}: finite timings > 0 ms, trust that follows from the noise, known keys",
                          hint="profile again: edgeexit profile --run-dir RUN") from None


def _plain(prof: Profile) -> dict:
    """The profile as the dict its users read (no `etdump` key unless it has ETDump timings)."""
    out = prof.model_dump()
    if out["etdump"] is None:
        del out["etdump"]
    return out


def noise_of(full: list[float], repeat: list[float]) -> dict:
    """The null test: the same model timed twice in the same rounds (edgeexit.timing.null_test)."""
    return null_test(full, repeat, NOISE_BOUND)


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
               "answer": stats(measured[f"answer{k}"]) if f"answer{k}" in measured else None,
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
    known = {"full", "full_repeat"} | {f"{kind}{e.index}" for e in bundle.exits
                                       for kind in ("exit", "segment", "head", "static")} | \
        {f"answer{e.index}" for e in bundle.exits[:-1]}  # the last exit answers without a test
    for b, measured in raw["batches"].items():
        missing = sorted(({"full"} | {f"exit{e.index}" for e in bundle.exits}) - set(measured))
        if missing or set(measured) - known:
            raise DeviceError(f"the device's profile of batch {b} does not fit this bundle's {len(bundle.exits)} exits",
                              got=f"missing {missing}, unknown {sorted(set(measured) - known)}",
                              expected="full and exit0..exit{E-1}", hint="profile again with this edgeexit's runner")
    batches = {b: summarise_batch(measured, bundle) for b, measured in raw["batches"].items()}
    first = min(batches, key=int)
    head = batches[first]
    # a backend that measures this host's CPU when run locally profiles the host's target, not the bundle's
    host = host_target(raw["backend"]) if device == "local" else None
    out = {
        "format": FORMAT,
        "target": host or m.target,
        "bundle_target": m.target, "backend": raw["backend"], "runner": raw["runner"], "device": device,
        "host": raw["device"].get("hostname"), "device_info": raw["device"], "versions": raw["versions"],
        "rounds": raw["rounds"], "calls": raw["calls"], "warmup": raw["warmup"], "threads": raw.get("threads"),
        "peak_rss_mb": raw.get("peak_rss_mb"),
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
    try:  # what is written is what the reader accepts: a profile that would not read back is refused now
        return _plain(Profile.model_validate(out))
    except ValidationError as err:
        raise DeviceError("the device's figures give no usable profile", got=validation_summary(err),
                          expected="finite, positive timings", hint="profile again on an idle device") from None


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
