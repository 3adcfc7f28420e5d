"""edgeexit.timing: the one timing discipline of the profiler and the benchmarks. Pure parts on fixed figures; then
the benchmark's and the profiler's unsplit times of one tiny bundle, which must agree within their own noise (and
must not, when the two ran on different thread counts)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgeexit import timing
from edgeexit.timing import FULL, REPEAT, Measurement, agree, null_test, ratio, with_null_test

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench"


def test_the_null_test_sits_half_a_round_from_the_reference():
    calls = []
    entries = {n: (lambda n=n: calls.append(n)) for n in ("full", "a", "b", "c")}
    names = list(with_null_test(entries))
    assert names == ["full", "a", "b", REPEAT, "c"]
    assert list(with_null_test({"full": None, "x": None})) == ["full", "x", REPEAT]  # never right after full
    with_null_test(entries)[REPEAT]()
    assert calls == ["full"]  # the repeat is the reference itself
    with pytest.raises(KeyError):
        with_null_test({"x": None})


def test_rounds_rotate_warm_up_and_prime():
    log = []
    entries = {n: (lambda n=n: log.append(n)) for n in ("full", "x")}
    times = timing.time_rounds(entries, rounds=2, calls=2, warmup=1, prime=1)
    assert {n: len(t) for n, t in times.items()} == {"full": 2, "x": 2}
    # warm-up of each, then round 0: full (1 primed + 2 timed), x; round 1 starts with x
    assert log == ["full", "x"] + ["full"] * 3 + ["x"] * 3 + ["x"] * 3 + ["full"] * 3


def test_a_ratio_whose_null_test_exceeds_its_bound_is_noisy():
    quiet = {FULL: [1.0, 1.0, 1.0, 1.0], REPEAT: [1.0, 1.01, 0.99, 1.0], "x": [0.5, 0.52, 0.48, 0.5]}
    r = ratio(quiet, "x")
    assert r["ratio"] == pytest.approx(0.5, abs=0.02) and not r["noisy"]
    assert r["iqr"][0] <= r["ratio"] <= r["iqr"][1]
    loud = {**quiet, REPEAT: [1.3, 1.2, 1.25, 1.3]}
    r = ratio(loud, "x")
    assert r["noisy"] and r["noise"] > timing.NOISE_BOUND
    assert timing.describe(r).startswith("NOISY")
    assert null_test([1, 1], [1, 1])["trusted"] and not null_test([1, 1], [1.1, 1.1])["trusted"]


def _m(full: list[float], repeat: list[float], **setup) -> Measurement:
    return Measurement({FULL: full, REPEAT: repeat}, null_test(full, repeat), setup=setup)


def test_agree_needs_the_same_setup_and_times_within_the_noise():
    same = {"backend": "onnxruntime", "threads": 2, "batch": 1}
    a = _m([1.0, 1.01, 0.99, 1.0, 1.0], [1.0, 1.0, 1.01, 0.99, 1.0], **same)
    assert agree(a, _m([1.02, 1.0, 1.01, 1.03, 1.01], [1.01, 1.02, 1.0, 1.02, 1.01], **same))["agree"]
    slow = agree(a, _m([1.5, 1.52, 1.49, 1.5, 1.5], [1.5, 1.5, 1.51, 1.49, 1.5], **same))
    assert not slow["agree"] and slow["setup_differs"] == []
    other = agree(a, _m([1.0, 1.01, 0.99, 1.0, 1.0], [1.0, 1.0, 1.01, 0.99, 1.0], **{**same, "threads": 1}))
    assert not other["agree"] and other["setup_differs"] == ["threads"]
    unrecorded = agree(a, _m([1.0] * 5, [1.0] * 5, backend="onnxruntime", batch=1))
    assert not unrecorded["agree"] and unrecorded["setup_differs"] == ["threads"]


def _bench_full(bundle: Path, batch: int, threads: int) -> dict:
    """tools/bench/early_exit.py's worker (its own process, as the benchmark runs it): its unsplit-model measurement,
    per call of `batch` images."""
    sys.path.insert(0, str(BENCH))
    import suite

    images = 64 * batch  # 64 calls a pass: the first, colder call of each pass weighs little
    got = suite.in_worker(str(BENCH / "early_exit.py"), {"bundle": str(bundle), "backend": "onnxruntime",
                                                         "threads": threads, "samples": images, "rounds": 15,
                                                         "batches": [batch], "calls": 3})
    m = got["rows"][0]["measurement"]
    per_call = batch / got["images"]  # a pass holds images / batch calls
    for s in m["stats"].values():
        for k in ("p10_ms", "p25_ms", "p50_ms", "p75_ms", "p90_ms"):
            s[k] *= per_call
    return m


def _profile_full(bundle: Path, batch: int, threads: int) -> Measurement:
    from edgeexit.profile import profile_bundle

    prof = profile_bundle(bundle, backend="onnxruntime", rounds=15, calls=3, warmup=2, batches=[batch], threads=threads)
    raw = prof["raw"]["batches"][str(batch)]
    return _m(raw[FULL], raw[REPEAT], backend=prof["backend"], threads=prof["threads"], batch=batch)


def test_the_benchmark_and_the_profiler_time_the_unsplit_model_alike(built):
    """Same bundle, same backend, same threads: the two unsplit times agree within the larger of their null tests
    (a tolerance derived from the noise of these very runs, so a loaded machine widens it rather than failing).
    The same comparison fails when the benchmark ran on another thread count: a figure with another setup is no
    yardstick for this one."""
    bundle = built[0] / "bundle"
    batch = 16  # enough work per call that the Python around it is noise, not a systematic difference
    # one thread: a pool of two on a shared 2-core box stalls whole rounds whenever a neighbour holds a core
    profiled = _profile_full(bundle, batch, threads=1)
    assert profiled.setup["threads"] == 1
    bench = _bench_full(bundle, batch, threads=1)
    verdict = agree(profiled, bench)
    assert verdict["agree"] and verdict["tolerance"] < 1.0, verdict
    other = agree(profiled, _bench_full(bundle, batch, threads=2))
    assert not other["agree"] and other["setup_differs"] == ["threads"], other


def test_prime_ms_keeps_priming_until_that_long_has_passed():
    """The profiler primes each figure for PRIME_MS of its own entry's calls, at least `prime`, at most MAX_PRIME."""
    import time as _time

    calls = {"full": 0, "x": 0}

    def slow(name):
        def run():
            calls[name] += 1
            _time.sleep(0.001)
        return run

    timing.time_rounds({"full": slow("full"), "x": slow("x")}, rounds=1, calls=1, warmup=0, prime=1, prime_ms=10.0)
    assert all(6 <= n <= 12 for n in calls.values()), calls  # ~10 primes of 1 ms, then the timed call
    calls.update(full=0, x=0)
    timing.time_rounds({"full": slow("full"), "x": slow("x")}, rounds=1, calls=1, warmup=0, prime=3, prime_ms=0.0)
    assert calls == {"full": 4, "x": 4}
    assert timing.PRIME_MS > 0 and timing.MAX_PRIME >= 100
