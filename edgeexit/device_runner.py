"""The profiler's device side: times a bundle where it runs and writes the raw measurements as JSON.

    python -m edgeexit.device_runner BUNDLE [--backend B] [--batches 1,8] [--rounds R] [--calls C] [--warmup W]
                                     [--threads T] [--out FILE]

It needs numpy, pydantic and the backend's own runtime, nothing else of edgeexit's dependencies (an ONNX bundle
never imports torch), so it runs on a Jetson or a Raspberry Pi from a copy of the `edgeexit` package that the
host pushes next to the bundle. The C++ runner's `--profile` writes the same document on a phone.

What is timed, per batch size, each round, by `edgeexit.timing`'s discipline (one explicit thread count for every
model, recorded as `threads`; entries in turn, the order rotated every round so drift hits all alike; each figure
the median of `calls` back-to-back calls after untimed calls of the same entry for `timing.PRIME_MS`, in ms):
- `full` and `full_repeat`: the unsplit model, twice, half a round apart. The two are the same work, so their
  ratio is the measurement's own noise (the host reads it as such);
- `exit{k}`: the exit loop forced to answer at exit k: segments 0..k (their heads are inside them) and the exit
  tests of the earlier exits that have a threshold (nobody leaves there), as a sample answering at k pays for them;
- `answer{k}` (every exit but the last): the same, but everyone leaves at k through k's exit test, as a sample that
  leaves there does (the test, the answer taken from the test's branch);
- `segment{k}`: segment k alone on its real input; `head{k}`: an intermediate exit's head alone;
- `static{k}`: the network truncated at exit k, run alone (the static alternative), as a plain call the way a bundle
  that ends there runs it (input check, upload, download, NaN check: what `full` pays too; the segments and heads
  are bare calls on uploaded inputs).

`executed` says what each entry ran, once, untimed, at the first batch size profiled: "full", "segmentK", "testK" (an
exit test), "headK", "staticK" in order. The C++ runner writes the same names, so a test can check that both runners
time the same work. A bundle with a batch-1 form (onnxruntime: one graph, edgeexit.export.fuse_onnx) runs it at
batch 1, where every exit passed is tested inside the graph and `exit{k}` leaves by k's test as `answer{k}` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from edgeexit.bundle import Bundle, load_bundle
from edgeexit.errors import ConfigError, EdgeExitError
from edgeexit.runtime import EarlyExitRuntime
from edgeexit.runtime.backend import default_backend, segment_file
from edgeexit.timing import FULL, PRIME_MS, pin_threads, time_rounds, with_null_test

FORMAT = "edgeexit-device-profile/1"
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "executorch": "executorch", "torch": "torch",
                    "tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt-rtx"}


def device_info() -> dict:
    cpu = platform.processor()
    try:  # x86: "model name"; Arm boards: "Hardware" / "Model" (a Raspberry Pi, a Jetson)
        info = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        info = {k.strip().lower(): v.strip() for k, v in info.items()}
        cpu = info.get("model name") or info.get("hardware") or info.get("model") or cpu
    except OSError:
        pass
    return {"hostname": platform.node(), "system": platform.system(), "machine": platform.machine(),
            "cpus": os.cpu_count() or 1, "cpu": cpu or "unknown"}


def runtime_versions() -> dict:
    """Versions of the runtimes this process loaded (and of Python and numpy)."""
    from importlib import metadata

    import edgeexit

    out = {"python": platform.python_version(), "numpy": np.__version__, "edgeexit": edgeexit.__version__}
    for module, dist in RUNTIME_PACKAGES.items():
        if module in sys.modules:
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = "unknown"
    return out


def peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on this OS
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


class _Recorder:
    """What the entries run while `log` is a list (one untimed call each); a no-op while it is None."""

    def __init__(self) -> None:
        self.log: list[str] | None = None

    def note(self, what: str) -> None:
        if self.log is not None:
            self.log.append(what)


def plain_runtime(runtime: EarlyExitRuntime, segment, cumulative_macs: int) -> EarlyExitRuntime:
    """A one-segment runtime over `segment` (a static probe) on `runtime`'s backend: a static truncation run as a
    bundle that ends there runs it, a plain call (input check, upload, the call, download, NaN check)."""
    return EarlyExitRuntime(runtime.backend, [segment], [None], [int(cumulative_macs)], runtime.input_shape,
                            runtime.num_classes, runtime.max_batch)


def _entries(bundle: Bundle, runtime: EarlyExitRuntime, x: np.ndarray,
             rec: _Recorder | None = None) -> dict[str, Callable[[], object]]:
    """name -> a call that runs that piece once on batch x (inputs prepared, uploaded once)."""
    rec = rec or _Recorder()
    be = runtime.backend
    full = runtime.reference()
    entries: dict[str, Callable[[], object]] = {FULL: lambda: (full.run(x), rec.note("full"))}

    def run_forced(forced: EarlyExitRuntime) -> None:  # forced(k) or answering(k)
        forced.trace = rec.log
        forced.run(x)

    for k in range(runtime.num_exits):
        forced = runtime.forced(k)
        entries[f"exit{k}"] = lambda forced=forced: run_forced(forced)
    for k in range(runtime.num_exits - 1):
        answering = runtime.answering(k)
        entries[f"answer{k}"] = lambda answering=answering: run_forced(answering)
    # each segment's real input: the previous one's features on these images
    feeds, cur = [], x
    for k, seg in enumerate(runtime.segments):
        feeds.append(be.upload(np.ascontiguousarray(cur)))
        outs = seg.run({seg.inputs[0].name: feeds[-1]})
        if k < runtime.num_exits - 1:
            cur = np.array(be.download(outs["features"]))
    for k, seg in enumerate(runtime.segments):
        entries[f"segment{k}"] = lambda seg=seg, feed=feeds[k], k=k: (seg.run({seg.inputs[0].name: feed}),
                                                                      be.synchronize(), rec.note(f"segment{k}"))
    max_batch = bundle.manifest.batch.max
    for kind in ("head", "static"):
        for e in bundle.exits:
            probe = getattr(e, kind)
            if probe is None:
                continue
            path, ref = segment_file(bundle, probe.segment, be.format, f"exit {e.index}'s {kind}")
            seg = be.open_segment(path, ref, probe.inputs, probe.outputs, max_batch)
            what = f"{kind}{e.index}"
            if kind == "static":  # as a static truncation is deployed: a plain call of a one-segment bundle
                plain = plain_runtime(runtime, seg, e.cumulative_macs)
                entries[what] = lambda plain=plain, what=what: (plain.run(x), rec.note(what))
                continue
            feed = feeds[e.index + 1]  # a head takes segment k's features
            entries[what] = lambda seg=seg, feed=feed, what=what: (
                seg.run({seg.inputs[0].name: feed}), be.synchronize(), rec.note(what))
    return with_null_test(entries)  # full_repeat half a round away from full (edgeexit.timing)


def executed(entries: dict[str, Callable[[], object]], rec: _Recorder) -> dict[str, list[str]]:
    """What each entry runs: one call each with the recorder on."""
    out = {}
    for name, fn in entries.items():
        rec.log = []
        try:
            fn()
            out[name] = rec.log
        finally:
            rec.log = None
    return out


def profile_device(bundle_dir: Path, *, backend: str | None = None, batches: list[int] | None = None,
                   rounds: int = 30, calls: int = 5, warmup: int = 5, threads: int | None = None,
                   seed: int = 0) -> dict:
    """The raw device profile of a bundle (see the module's doc)."""
    bundle = load_bundle(Path(bundle_dir))
    m = bundle.manifest
    batches = batches or sorted({1, m.batch.max})
    for b in batches:
        if not m.batch.min <= b <= m.batch.max:
            raise ConfigError("batch size outside the bundle's range", got=b, expected=f"{m.batch.min}..{m.batch.max}",
                              hint="the bundle was exported for its target's batch range")
    for name, v in (("rounds", rounds), ("calls", calls)):
        if v < 1:
            raise ConfigError(f"--{name} must be >= 1", got=v)
    # one explicit thread count for every pool of this process, recorded (edgeexit.timing)
    setup = pin_threads(backend or default_backend(bundle), threads)
    runtime = EarlyExitRuntime.open(bundle, backend, threads=setup["threads"])
    rng = np.random.default_rng(seed)
    measured, ran = {}, {}
    try:
        for b in batches:
            x = rng.standard_normal((b, *bundle.input_shape)).astype(np.float32)
            rec = _Recorder()
            entries = _entries(bundle, runtime, x, rec)
            ran = ran or executed(entries, rec)  # at the first batch (the batch-1 form, where a bundle has one)
            measured[str(b)] = time_rounds(entries, rounds=rounds, calls=calls, warmup=warmup, prime_ms=PRIME_MS)
    finally:
        name = runtime.backend.name
        runtime.close()
    import edgeexit

    return {"format": FORMAT, "runner": "python", "runner_location": str(Path(edgeexit.__file__).parent),
            "backend": name, "bundle_checksum": m.checksum,
            "device": device_info(), "versions": runtime_versions(), "warmup": warmup, "rounds": rounds,
            "calls": calls, "prime_ms": PRIME_MS, "threads": setup["threads"], "batches": measured,
            "peak_rss_mb": peak_rss_mb(), "executed": ran}


def _batches(text: str) -> list[int]:
    try:
        out = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError("--batches takes integers", got=text, expected="e.g. 1,8") from None
    if not out:
        raise ConfigError("--batches is empty", got=text, expected="e.g. 1,8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgeexit.device_runner", description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--backend")
    ap.add_argument("--batches", default="")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    try:
        raw = profile_device(a.bundle, backend=a.backend, batches=_batches(a.batches) if a.batches else None,
                             rounds=a.rounds, calls=a.calls, warmup=a.warmup, threads=a.threads)
    except EdgeExitError as err:
        print(f"edgeexit device runner: {err}", file=sys.stderr)
        return 2
    text = json.dumps(raw)
    if a.out:
        tmp = a.out.with_name(a.out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, a.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
