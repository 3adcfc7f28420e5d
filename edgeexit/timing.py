"""One timing discipline for every figure edgeexit prints: the profiler (`edgeexit profile`, its device runner) and
every script in tools/bench/ time through this module, so two figures of the same bundle can be compared.

The discipline
--------------
1. One process, one runtime, one thread pool. The unsplit model and the segments are opened by the same
   `EarlyExitRuntime` in the same process, so they share the backend's session options and its one intra-op thread
   pool (onnxruntime: one global pool; torch: `torch.set_num_threads`; ExecuTorch: its XNNPACK threadpool). The
   thread count is always explicit: `resolve_threads(None)` is the number of cores this process may use, and
   `pin_threads` sets every pool of the process to it and reads back what the runtimes really use (`setup`).
2. The same inputs for the unsplit model and the split one, prepared (and uploaded) before timing: a fixed batch
   (the profiler, overhead, scaling) or one pass over the same test images (early exit, realisation).
3. Warm-up: every entry runs `warmup` times before anything is timed; the garbage collector is off while timing
   (it runs between rounds).
4. Alternating rounds: each round runs every entry once (the median of `calls` back-to-back calls, after `prime`
   untimed calls of the same entry, so each figure starts from its own warm caches whatever ran before it), the
   order rotated every round so that drift hits all entries alike.
5. Null test: the unsplit model is entered twice, `full` and `full_repeat`, half a round apart (right after `full` it
   would find the weights in cache and come out faster: the pair would measure the cache, not the noise). Their
   ratio is the run's own noise: `noise = max(|null ratio - 1|, (p90 - p10 of the per-round ratios) / sqrt(rounds))`.
6. Ratios, never absolute times: `ratio(times, "x")` is the median of the per-round ratios x / full with its IQR,
   min and max, printed next to the null test. A ratio whose null test exceeds its stated bound (`NOISE_BOUND`
   unless the figure states a tighter one) is `noisy`: reported as noise, not as a result.

Public API (stable: the profiler, tools/bench/*.py and tools/bench/deploy.py use it)
------------------------------------------------------------------------------------
    NOISE_BOUND, FULL, REPEAT
    resolve_threads(threads) -> int                     # None/0 -> usable cores
    pin_threads(backend, threads) -> dict               # set the process's pools; the `setup` record
    with_null_test(entries, reference=FULL) -> dict     # inserts REPEAT half a round away from FULL
    PRIME_MS, MAX_PRIME                                 # how long each figure is primed (profiler, overhead, scaling)
    time_rounds(entries, *, rounds, calls, warmup, prime=1, prime_ms=0) -> dict[str, list[float]]  # ms, per round
    stats(ms) -> dict                                   # p10 p25 p50 p75 p90 (ms), spread, rounds
    null_test(full, repeat, bound=NOISE_BOUND) -> dict  # null_ratio, round_ratio_p10/p90, noise, bound, trusted
    ratio(times, name, reference=FULL, *, bound=NOISE_BOUND) -> dict   # median, iqr, min, max, null test, noisy
    measure(entries, *, rounds, calls, warmup, prime=1, prime_ms=0, bound=NOISE_BOUND, setup=None) -> Measurement
    describe(r) -> str                                  # "0.412x (IQR 0.405-0.420; null 1.004, noise 0.6 % <= 3 %)"
    agree(a, b, *, slack=3.0) -> dict                   # do two measurements of the same work agree within noise?

Why `tools/bench/early_exit.py` and `edgeexit profile` disagreed (issue 20)
-------------------------------------------------------------------------
The benchmark printed early exit / full 0.155 with the full model at 3.39 ms per image; the profiler, on the same
bundle a minute earlier, put the unsplit model at 2.19 ms and the forced final exit at 0.882x of it. Neither
figure was a measurement of what it claimed:

- The profiler's order favoured the split model. Its 16 entries ran in a fixed cycle, rotated each round, each
  figure the median of 3 calls straight after another entry. In that cycle `exit{last}` (the forced final exit)
  always follows `exit{last-1}`, which runs the same segment sessions and leaves their weights in cache, while
  `full` follows `static{last-1}`, another session with its own copy of the weights. At 32 px a ResNet-18 is
  bound by reading its 44 MB of weights, not by its MACs, so cache state is most of the time. Measured on this
  machine kind (one thread, CPU time, three trials): forced / unsplit 1.03-1.06 in the profiler's layout against
  1.19-1.25 for the same two models timed alone, i.e. the layout took about 15 points off the ratio, enough to
  turn a true ~1.05 into the 0.88 reported. The null test could not see it: `full_repeat` had the same handicap
  as `full`. Fix: one untimed call of the same entry before each timed figure (`prime`), so every figure starts
  warm on itself whatever ran before (then 1.07-1.16 against 1.16 alone).
- The benchmark divided times taken in different processes at different times. `--worker full` and
  `--worker early_exit` were separate interpreters run one after the other, each timing one model over 2,000
  images, and the ratio was total over total. Two processes are two thread pools, two heaps and two moments of a
  machine whose L3 cache and memory bandwidth are shared with other tenants; for a weight-bound model that
  decides the time: the same unsplit model, same settings, measured 1.05 ms and 2.2 ms of CPU per image in two
  processes a minute apart here, while pairs timed in one process stayed within a few % of each other. So the
  yardstick came out at 3.39 ms for a 2.19 ms model and the ratio at 0.155, with nothing to flag it (no null
  test, only the spread of three such ratios). Neither tool pinned or recorded its thread count (both used
  onnxruntime's default, which is the core count here, but nothing said so), and the benchmark's `--threads` did
  not reach ExecuTorch's XNNPACK pool at all. Fix: both models in one process and one runtime, timed in rotated
  rounds within the same window, each round one pass over the same images, with the null test; threads pinned
  by `pin_threads` (ExecuTorch's pool included) and recorded with every figure.

Early exit can legitimately beat its MAC fraction here (the last ResNet-18 stage holds 75 % of the weights for 24 %
of the MACs), but only an in-process, null-tested ratio may say by how much. tests/test_timing.py checks that the
benchmark's and the profiler's unsplit times of one bundle agree within their noise, and that they do not count
as comparable when their thread counts differ.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from edgeexit.threads import cores

NOISE_BOUND = 0.03  # a same-work ratio further than 3 % from 1: the figures of this run are not trusted
FULL, REPEAT = "full", "full_repeat"


def resolve_threads(threads: int | None) -> int:
    """The thread count to use: `threads` when it is >= 1, else the number of cores this process may run on (not
    the runtime's own default, which differs by runtime and is not recorded anywhere)."""
    return int(threads) if threads else cores()


def pin_threads(backend: str, threads: int | None) -> dict:
    """Set this process's thread pools for `backend` to `resolve_threads(threads)` before any model is opened, and
    return what the runtimes report (the `setup` record every figure carries). Call it once per process; open the
    runtime with the same count (`EarlyExitRuntime.open(..., threads=setup["threads"])`)."""
    n = resolve_threads(threads)
    setup: dict = {"backend": backend, "threads": n}
    if backend.startswith("onnxruntime"):
        from edgeexit.ort_session import pool_threads, session_options

        session_options(n)  # the first call creates the process's one global pool
        setup["onnxruntime_pool"] = pool_threads()
        setup["per_session_threads"] = False
    if backend.startswith("torch") or backend == "executorch":
        import torch

        torch.set_num_threads(n)
        setup["torch_threads"] = torch.get_num_threads()
    if backend == "executorch":
        from executorch.extension.pybindings import portable_lib

        from edgeexit.runtime.executorch_rt import size_threadpool

        size_threadpool(n)  # XNNPACK's pool: torch's count does not reach it
        setup["executorch_threads"] = int(portable_lib._threadpool_get_thread_count())
    return setup


def with_null_test(entries: Mapping[str, Callable[[], object]],
                   reference: str = FULL) -> dict[str, Callable[[], object]]:
    """`entries` with `REPEAT` (the reference once more) inserted half a round away from the reference."""
    if reference not in entries:
        raise KeyError(f"the null test needs the reference entry {reference!r}")
    names = [n for n in entries if n != REPEAT]
    names.insert(names.index(reference) + 1 + len(names) // 2, REPEAT)  # never right after the reference
    return {n: entries[reference] if n == REPEAT else entries[n] for n in names}


# The profiler primes each figure for PRIME_MS of calls of its own entry, not one call: measured on ExecuTorch
# (XNNPACK, 2 threads, ResNet-18 at 32 px, batch 1), the unsplit model in the profiler's rotation came out at
# 1.99 ms after one primed call, 1.41 after 3, 1.31 after 10 and 1.21 after 30, against 1.17 ms back to back in a
# stream; the network truncated at layer3 0.86 -> 0.51 ms. The cost model fitted on one-call primes put a plain call
# at +0.5 ms and mispredicted every static truncation by +150 %, and the search shipped a deployment slower than one.
# Both runners (this module and the C++ runner's --profile) prime the same way; overhead and scaling benchmarks too.
PRIME_MS = 20.0
MAX_PRIME = 1000


def time_rounds(entries: Mapping[str, Callable[[], object]], *, rounds: int, calls: int = 1,
                warmup: int = 1, prime: int = 1, prime_ms: float = 0.0) -> dict[str, list[float]]:
    """Per entry, one figure per round in ms: the median of `calls` back-to-back calls, after `prime` untimed
    calls of the same entry, and more until `prime_ms` have passed (at most MAX_PRIME; so every figure starts from
    its own warm caches and awake worker threads, whatever ran before it: see PRIME_MS). Every entry
    is warmed up `warmup` times first; each round starts one entry further on (every entry leads in turn). The
    garbage collector is off while timing and runs between rounds, as `timeit` does: a full collection in a process
    holding torch takes ~10 ms, and it falls on the same entry of every round."""
    names = list(entries)
    for _ in range(warmup):
        for name in names:
            entries[name]()
    out: dict[str, list[float]] = {n: [] for n in names}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            gc.collect()
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                fn, times = entries[name], []
                t0 = time.perf_counter()
                for _ in range(prime):
                    fn()
                for _ in range(MAX_PRIME if prime_ms > 0 else 0):
                    if 1e3 * (time.perf_counter() - t0) >= prime_ms:
                        break
                    fn()
                for _ in range(calls):
                    t = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t)
                out[name].append(1e3 * statistics.median(times))
    finally:
        if enabled:
            gc.enable()
    return out


def stats(ms) -> dict:
    """Percentiles of per-round times (ms), `spread` = (p90 - p10) / p50."""
    a = np.asarray(ms, dtype=np.float64)
    p10, p25, p50, p75, p90 = (float(v) for v in np.percentile(a, [10, 25, 50, 75, 90]))
    return {"p50_ms": p50, "p10_ms": p10, "p25_ms": p25, "p75_ms": p75, "p90_ms": p90,
            "spread": (p90 - p10) / p50 if p50 > 0 else math.inf, "rounds": int(a.size)}


def null_test(full, repeat, bound: float = NOISE_BOUND) -> dict:
    """The same model timed twice in the same rounds: how far apart two figures of the same work come out."""
    r = np.asarray(repeat, dtype=np.float64) / np.asarray(full, dtype=np.float64)
    null = float(np.median(repeat) / np.median(full))
    p10, p90 = np.percentile(r, [10, 90])
    noise = max(abs(null - 1.0), float(p90 - p10) / math.sqrt(len(r)))
    return {"null_ratio": null, "round_ratio_p10": float(p10), "round_ratio_p90": float(p90), "noise": noise,
            "bound": bound, "trusted": noise <= bound}


def ratio(times: Mapping[str, list[float]], name: str, reference: str = FULL, *, bound: float = NOISE_BOUND) -> dict:
    """`name` over `reference`, round by round: the median ratio, its IQR, min and max, with the null test of the
    same rounds (`times` must hold REPEAT). `noisy`: the null test exceeds `bound`, the ratio is no result."""
    r = np.asarray(times[name], dtype=np.float64) / np.asarray(times[reference], dtype=np.float64)
    q25, q50, q75 = (float(v) for v in np.percentile(r, [25, 50, 75]))
    null = null_test(times[FULL], times[REPEAT], bound)
    return {"ratio": q50, "iqr": [q25, q75], "min": float(r.min()), "max": float(r.max()), "rounds": int(r.size),
            "null_ratio": null["null_ratio"], "noise": null["noise"], "bound": bound, "noisy": not null["trusted"]}


@dataclass
class Measurement:
    """What `measure` took: per-entry times (ms per round) and the null test of those rounds."""

    times: dict[str, list[float]]
    noise: dict
    bound: float = NOISE_BOUND
    setup: dict = field(default_factory=dict)

    def ratio(self, name: str, reference: str = FULL) -> dict:
        return ratio(self.times, name, reference, bound=self.bound)

    def stats(self, name: str) -> dict:
        return stats(self.times[name])

    def to_json(self) -> dict:
        return {"setup": self.setup, "noise": self.noise, "stats": {n: stats(t) for n, t in self.times.items()},
                "times_ms": self.times}


def measure(entries: Mapping[str, Callable[[], object]], *, rounds: int, calls: int = 1, warmup: int = 1,
            prime: int = 1, prime_ms: float = 0.0, bound: float = NOISE_BOUND, setup: dict | None = None) -> Measurement:
    """Time `entries` (which must hold FULL, the unsplit model) with the null test added: see the module's doc."""
    times = time_rounds(with_null_test(entries), rounds=rounds, calls=calls, warmup=warmup, prime=prime,
                        prime_ms=prime_ms)
    return Measurement(times, null_test(times[FULL], times[REPEAT], bound), bound, dict(setup or {}))


def describe(r: dict, unit: str = "x") -> str:
    """One line for a `ratio`: the figure with its spread and null test, or why it is no result."""
    sign = ">" if r["noisy"] else "<="
    null = f"null {r['null_ratio']:.3f}, noise {100 * r['noise']:.1f} % {sign} {100 * r['bound']:.0f} %"
    body = f"{r['ratio']:.3f}{unit} (IQR {r['iqr'][0]:.3f}-{r['iqr'][1]:.3f}; {null})"
    return f"NOISY {body}" if r["noisy"] else body


def agree(a: Measurement | dict, b: Measurement | dict, name: str = FULL, *, slack: float = 3.0,
          floor: float = 0.02) -> dict:
    """Whether two measurements (say the benchmark's and the profiler's) time `name` the same within their noise:
    the same setup (backend, threads and batch must be recorded by both; any other key both record must match too)
    and a ratio of medians within `tolerance` of 1. The tolerance comes from the two runs' own null tests: `slack`
    times (the larger |null ratio - 1| plus the larger interquartile spread of the times over sqrt(rounds)), never
    below `floor`; quartiles, so that a few stalled rounds on a loaded machine widen it without blowing it up.
    Accepts Measurements or their `to_json()`."""
    a = a.to_json() if isinstance(a, Measurement) else a
    b = b.to_json() if isinstance(b, Measurement) else b
    sa, sb = a["stats"][name], b["stats"][name]

    def iqr(s: dict) -> float:
        return (s["p75_ms"] - s["p25_ms"]) / s["p50_ms"] / math.sqrt(s["rounds"])

    null = max(abs(a["noise"]["null_ratio"] - 1.0), abs(b["noise"]["null_ratio"] - 1.0))
    tolerance = max(floor, slack * (null + max(iqr(sa), iqr(sb))))
    r = sb["p50_ms"] / sa["p50_ms"]
    keys = {"backend", "threads", "batch"} | (set(a["setup"]) & set(b["setup"]))
    differ = sorted(k for k in keys if k not in a["setup"] or k not in b["setup"] or a["setup"][k] != b["setup"][k])
    return {"ratio": r, "tolerance": tolerance, "setup_differs": differ,
            "agree": not differ and abs(r - 1.0) <= tolerance}
