"""The C++ runner (edgeexit/glue/executorch: C API + edgeexit_runner, linked against the executorch wheel) against the
Python ExecuTorch backend on the same android bundle and inputs: same predictions and exits, logits within 1e-4;
it refuses tampered and schema-violating bundles with a message that says what is wrong; `--verify` runs the
bundle's BundledProgram test vectors through the program it runs (and a tampered vector fails); `--profile` writes
the on-device profile JSON (edgeexit-device-profile/1).

The build (CMake, Release, only the runner and its library) and the tiny android bundle are made once per session
under pytest's base temp directory; tests/test_android_jvm.py reuses both through the helpers below. The build is of
the tree `edgeexit glue` copies out of the package (what a user builds), not of the checkout's. What `profile
--device adb://` pushes (edgeexit.devices.runner_files) runs alone from a fresh folder, in an empty environment.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from edgeexit import timing
from edgeexit.bundle import sha256
from edgeexit.bundle.manifest import digest
from edgeexit.data.synthetic import synthetic
from edgeexit.runtime import EarlyExitRuntime

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "edgeexit" / "glue"
N_INPUTS = 40
SETUP_HINT = "run tools/setup.sh (it installs PyPI's cmake into .venv, and the Debian headers, JDK and kotlin)"


def require_tool(path: Path | str | None, what: str) -> str:
    """`path` as a string if it is an executable file; the test fails (never skips) otherwise."""
    if path is None or not Path(path).is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"{what} is not installed | got: {path} | expected: an executable | hint: {SETUP_HINT}",
                    pytrace=False)
    return str(path)


def run_checked(cmd: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, **kwargs)
    if res.returncode != 0:
        pytest.fail(f"{what} failed (exit {res.returncode}): {' '.join(cmd)}\n{res.stdout[-4000:]}\n"
                    f"{res.stderr[-4000:]}", pytrace=False)
    return res


def executorch_cmake_dir() -> Path:
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"the executorch wheel is not installed | hint: {SETUP_HINT}", pytrace=False)
    config = Path(next(iter(spec.submodule_search_locations))) / "share" / "cmake"
    if not (config / "executorch-config.cmake").is_file():
        pytest.fail(f"the executorch wheel has no CMake config | got: {config}", pytrace=False)
    return config


def build_cpp(base: Path) -> Path:
    """Copies the executorch glue out with `edgeexit.glue.copy_glue` (what `edgeexit glue --what executorch` does) and
    configures and builds it (Release, edgeexit_runner, libedgeexit, edgeexit_canonical) in base/cpp-build; a second
    call in the same session is an incremental no-op. Returns the build directory. EDGEEXIT_CPP_BUILD names a build
    directory kept between sessions instead (its sources go to EDGEEXIT_CPP_BUILD-src: an incremental build, for
    iterating on the C++ side)."""
    from edgeexit.glue import copy_glue

    build = Path(os.environ["EDGEEXIT_CPP_BUILD"]) if os.environ.get("EDGEEXIT_CPP_BUILD") else base / "cpp-build"
    source = build.with_name(build.name + "-src") if os.environ.get("EDGEEXIT_CPP_BUILD") else base / "glue"
    cmake = require_tool(Path(sys.executable).parent / "cmake", "cmake >= 3.28 in the venv")
    ninja = shutil.which("ninja")
    t0 = time.perf_counter()
    copy_glue(source, "executorch")  # files already up to date are left alone: the build stays incremental
    if not (build / "CMakeCache.txt").is_file():
        run_checked([cmake, "-S", str(source / "executorch"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                     f"-Dexecutorch_DIR={executorch_cmake_dir()}", *(["-G", "Ninja"] if ninja else [])],
                    "cmake configure of the executorch glue")
    run_checked([cmake, "--build", str(build), "--target", "edgeexit_runner", "edgeexit", "edgeexit_canonical", "-j",
                 str(os.cpu_count() or 2)],
                "cmake build of the executorch glue")
    print(f"\n[cpp] configure + build of the executorch glue: {time.perf_counter() - t0:.1f} s")
    return build


def export_android(run: Path, base: Path) -> Path:
    """The tiny build's android bundle (ExecuTorch .pte, XNNPACK) at base/android-bundle, exported once."""
    from typer.testing import CliRunner

    from edgeexit.cli import app

    out = base / "android-bundle"
    if not (out / "manifest.json").is_file():
        res = CliRunner().invoke(app, ["export", "--run-dir", str(run), "--target", "android", "--out", str(out)])
        assert res.exit_code == 0, res.output
    return out


def sample_inputs(bundle: Path) -> np.ndarray:
    """N_INPUTS samples of the synthetic task the tiny model learnt (not its training samples), float32 NCHW."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    c, h, w = manifest["input"]["shape"]
    data = synthetic(N_INPUTS, channels=c, size=h, num_classes=len(manifest["class_names"]), seed=12345)
    x = np.ascontiguousarray(data.tensors[0].numpy(), dtype=np.float32)
    assert x.shape == (N_INPUTS, c, h, w)
    return x


def resign(bundle: Path, edit) -> Path:
    """Applies `edit` to the raw manifest and re-seals it (checksum recomputed), as if edgeexit had written it."""
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    raw["checksum"] = digest(raw)
    path.write_text(json.dumps(raw, indent=2))
    return bundle


def tampered_vectors(bpte: Path, method: str = "seg0", output: int = 1) -> bytes:
    """The BundledProgram at `bpte` with the first element of one expected output of `method` (default seg0's logits)
    set to 100, re-serialised with ExecuTorch's own converters (as tests/test_executorch.py tampers)."""
    from executorch.devtools.bundled_program.serialize import (
        convert_from_flatbuffer,
        convert_to_flatbuffer,
    )

    vectors = json.loads(convert_from_flatbuffer(bpte.read_bytes()))
    suite = next(s for s in vectors["method_test_suites"] if s["method_name"] == method)
    suite["test_cases"][0]["expected_outputs"][output]["val"]["data"][:4] = list(np.float32(100.0).tobytes())
    return convert_to_flatbuffer(json.dumps(vectors))


def with_vectors(bundle: Path, data: bytes, dest: Path) -> Path:
    """A copy of `bundle` at `dest` whose pte/program.bpte is `data`, re-sealed (its sha256 in `files`, the
    checksum) as a forger would: the bundle's own checks pass, only the vectors are wrong."""
    out = Path(shutil.copytree(bundle, dest))
    (out / "pte" / "program.bpte").write_bytes(data)
    return resign(out, lambda m: m["files"].__setitem__("pte/program.bpte", sha256(out / "pte" / "program.bpte")))


def method_names(bundle: Path) -> list[str]:
    """The .pte methods every bundle verifies: the exits' segments, then the reference."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    return [e["segment"]["pte"]["method"] for e in manifest["exits"]] + [manifest["reference"]["segment"]["pte"]["method"]]


def check_verification(got: dict, bundle: Path, *, failing: str | None) -> None:
    """`got` (the runner's or the JVM's --verify JSON) holds every method, with the bundle's tolerance, and only
    `failing` (if any) failed, on its tampered logits."""
    from edgeexit.export.lower_pte import TOLERANCE

    precision = json.loads((bundle / "manifest.json").read_text())["precision"]
    assert got["tolerance"] == pytest.approx(TOLERANCE[precision], rel=1e-9)
    assert got["passed"] is (failing is None)
    methods = {m["method"]: m for m in got["methods"]}
    assert list(methods)[:len(method_names(bundle))] == method_names(bundle), list(methods)
    for name, m in methods.items():
        assert m["cases"] >= 1
        if name == failing:
            assert not m["passed"] and m["max_abs_error"] > 90 and m["max_error"] > got["tolerance"]
            assert "output 1 element 0" in m["detail"] and "expected 100" in m["detail"], m["detail"]
        else:
            assert m["passed"] and m["detail"] == "", m
            assert 0 <= m["max_abs_error"] and m["max_error"] <= got["tolerance"]


def spread_thresholds(bundle: Path, x: np.ndarray, dest: Path) -> Path:
    """A copy of `bundle` whose thresholds send a share of `x` to every exit: at exit k, midway between two
    neighbouring scores of the samples still running, so that about 1/(exits left) of them leave there and no
    score sits on a threshold (float rounding cannot flip a decision)."""
    rt = EarlyExitRuntime.open(bundle, backend="executorch")
    scores = [o["score"] for o in rt.exit_outputs(x)]
    num_exits = rt.num_exits
    rt.close()
    thresholds: list[float | None] = []
    live = np.arange(len(x))
    for k in range(num_exits - 1):
        s = np.sort(scores[k][live])
        i = len(s) - max(1, len(s) // (num_exits - k))  # the top share leaves at exit k
        while i > 0 and s[i - 1] == s[i]:
            i -= 1
        assert i > 0, f"exit {k}: every sample still running has the same score {s[0]}; no threshold splits them"
        threshold = float((np.float64(s[i - 1]) + np.float64(s[i])) / 2)
        thresholds.append(threshold)
        live = live[scores[k][live] < np.float32(threshold)]
    thresholds.append(None)
    out = Path(shutil.copytree(bundle, dest))

    def edit(raw):
        for e, t in zip(raw["exits"], thresholds, strict=True):
            e["threshold"] = t

    return resign(out, edit)


def python_reference(bundle: Path, x: np.ndarray):
    rt = EarlyExitRuntime.open(bundle, backend="executorch")
    try:
        return rt.run(x)
    finally:
        rt.close()


def run_runner(build: Path, bundle: Path, x: np.ndarray, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    inp = tmp / "x.f32"
    x.astype("<f4").tofile(inp)
    runner = require_tool(build / "edgeexit_runner", "the edgeexit_runner build")
    # errors="replace": ExecuTorch's own log lines quote names from a damaged program byte for byte
    return subprocess.run([runner, str(bundle), str(inp), str(len(x)), *extra], check=False, capture_output=True,
                          text=True, errors="replace", timeout=120)


@pytest.fixture(scope="session")
def cpp_build(tmp_path_factory, request) -> Path:
    """The runner's build; it compiles in the background while the session trains and exports the tiny bundle."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        build = pool.submit(build_cpp, tmp_path_factory.getbasetemp())
        request.getfixturevalue("android_bundle")
        return build.result()


@pytest.mark.parametrize("thresholds", ["exported", "spread"])
def test_runner_matches_python_backend(thresholds, cpp_build, android_bundle, spread_bundle, inputs, tmp_path):
    bundle = android_bundle if thresholds == "exported" else spread_bundle
    want = python_reference(bundle, inputs)
    res = run_runner(cpp_build, bundle, inputs, tmp_path, "--repeat", "2", "--logits", str(tmp_path / "logits.f32"))
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    num_exits = len(json.loads((bundle / "manifest.json").read_text())["exits"])
    if thresholds == "spread":
        assert sorted(set(want.exit_index.tolist())) == list(range(num_exits)), want.exit_index
    assert got["exit_index"] == want.exit_index.tolist()
    assert got["predictions"] == want.predictions.tolist()
    logits = np.fromfile(tmp_path / "logits.f32", dtype="<f4").reshape(want.logits.shape)
    np.testing.assert_allclose(logits, want.logits, rtol=0, atol=1e-4)
    assert got["repeat"] == 2 and len(got["segment_ms"]) == num_exits
    assert all(ms >= 0 for ms in got["segment_ms"]) and got["total_ms"] > 0
    assert all("XnnpackBackend" in d.split(",") for d in got["delegates"]), got["delegates"]  # delegated, and ran


def test_forced_exit_matches_python_backend(cpp_build, spread_bundle, inputs, tmp_path):
    """--force-exit K (ee_run_forced, what the profile's exitK times): every sample answers at K, even where the
    spread thresholds would let it leave earlier, with the Python backend's forced(K) logits."""
    rt = EarlyExitRuntime.open(spread_bundle, backend="executorch")
    try:
        for k in range(rt.num_exits):
            want = rt.forced(k).run(inputs)
            res = run_runner(cpp_build, spread_bundle, inputs, tmp_path, "--force-exit", str(k), "--logits",
                             str(tmp_path / "logits.f32"))
            assert res.returncode == 0, res.stderr
            got = json.loads(res.stdout)
            assert got["exit_index"] == [k] * len(inputs) and got["predictions"] == want.predictions.tolist()
            logits = np.fromfile(tmp_path / "logits.f32", dtype="<f4").reshape(want.logits.shape)
            np.testing.assert_allclose(logits, want.logits, rtol=0, atol=1e-4)
        res = run_runner(cpp_build, spread_bundle, inputs, tmp_path, "--force-exit", str(rt.num_exits))
        assert res.returncode == 1 and f"no exit {rt.num_exits}" in res.stderr, res.stderr
    finally:
        rt.close()


def test_tampered_segment_file_is_refused(cpp_build, android_bundle, inputs, tmp_path):
    bundle = Path(shutil.copytree(android_bundle, tmp_path / "bundle"))
    pte = bundle / "pte" / "program.pte"
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0x01
    pte.write_bytes(bytes(data))
    res = run_runner(cpp_build, bundle, inputs, tmp_path)
    assert res.returncode != 0 and res.stdout == ""
    assert "pte/program.pte" in res.stderr and "modified" in res.stderr, res.stderr


@pytest.mark.parametrize("edit, where", [
    (lambda m: m["exits"][0].__setitem__("threshold", "high"), "/exits/0/threshold"),
    (lambda m: m["batch"].__setitem__("max", 0), "/batch/max"),
    (lambda m: m["input"].__setitem__("layout", "NHWC"), "/input/layout"),
], ids=["threshold-string", "batch-max-0", "layout"])
def test_schema_violation_is_refused(edit, where, cpp_build, android_bundle, inputs, tmp_path):
    bundle = resign(Path(shutil.copytree(android_bundle, tmp_path / "bundle")), edit)
    res = run_runner(cpp_build, bundle, inputs, tmp_path)
    assert res.returncode != 0 and res.stdout == ""
    assert "does not match the v2 schema" in res.stderr and where in res.stderr, res.stderr


def test_path_outside_bundle_is_refused(cpp_build, android_bundle, inputs, tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not part of the bundle")
    sha = "0" * 64
    bundle = resign(Path(shutil.copytree(android_bundle, tmp_path / "bundle")),
                    lambda m: m["files"].__setitem__("../outside.bin", sha))
    res = run_runner(cpp_build, bundle, inputs, tmp_path)
    assert res.returncode != 0 and "outside the bundle" in res.stderr and "../outside.bin" in res.stderr, res.stderr


def test_nan_input_is_refused(cpp_build, android_bundle, inputs, tmp_path):
    x = inputs.copy()
    x[3, 0, 0, 0] = math.nan
    res = run_runner(cpp_build, android_bundle, x, tmp_path)
    assert res.returncode != 0 and "NaN or inf" in res.stderr, res.stderr


def run_bare(build: Path, bundle: Path, *args: str) -> subprocess.CompletedProcess:
    runner = require_tool(build / "edgeexit_runner", "the edgeexit_runner build")
    return subprocess.run([runner, str(bundle), *args], check=False, capture_output=True, text=True, errors="replace",
                          timeout=300)


def test_verify_passes_on_a_fresh_bundle(cpp_build, android_bundle):
    res = run_bare(cpp_build, android_bundle, "--verify")
    assert res.returncode == 0, res.stderr
    check_verification(json.loads(res.stdout), android_bundle, failing=None)


@pytest.mark.parametrize("where", ["resealed-bundle", "bpte-by-path"])
def test_a_tampered_vector_fails_verification(where, cpp_build, android_bundle, tmp_path):
    """One expected logit of seg0 changed: in a re-sealed copy of the bundle (as a forger would: sha256s and checksum
    match, so the bundle opens) or in a .bpte given by path; the program is the genuine one either way."""
    data = tampered_vectors(android_bundle / "pte" / "program.bpte")
    if where == "resealed-bundle":
        res = run_bare(cpp_build, with_vectors(android_bundle, data, tmp_path / "bundle"), "--verify")
    else:
        (tmp_path / "bad.bpte").write_bytes(data)
        res = run_bare(cpp_build, android_bundle, "--verify", "--bpte", str(tmp_path / "bad.bpte"))
    assert res.returncode == 1, res.stderr
    assert "test vectors fail on this device" in res.stderr and "seg0: case 0 output 1" in res.stderr, res.stderr
    check_verification(json.loads(res.stdout), android_bundle, failing="seg0")


def test_verify_refuses_a_file_that_is_not_a_bundled_program(cpp_build, android_bundle, tmp_path):
    (tmp_path / "x.bpte").write_bytes((android_bundle / "pte" / "program.pte").read_bytes())
    res = run_bare(cpp_build, android_bundle, "--verify", "--bpte", str(tmp_path / "x.bpte"))
    assert res.returncode == 1 and res.stdout == "" and "not a BundledProgram" in res.stderr, res.stderr


def profile_keys(manifest: dict) -> set[str]:
    """The entries a profile of this bundle times: full, full_repeat, exitK, segmentK, answerK (every exit but the
    last), and headK / staticK where the manifest's exit names a head or a static model."""
    n = len(manifest["exits"])
    keys = {"full", "full_repeat", *(f"exit{k}" for k in range(n)), *(f"segment{k}" for k in range(n)),
            *(f"answer{k}" for k in range(n - 1))}
    for k, e in enumerate(manifest["exits"]):
        keys |= {f"{field}{k}" for field in ("head", "static") if e.get(field)}
    return keys


def test_profile_writes_the_device_profile(cpp_build, android_bundle, tmp_path):
    manifest = json.loads((android_bundle / "manifest.json").read_text())
    top = manifest["batch"]["max"]
    out = tmp_path / "profile.json"
    res = run_bare(cpp_build, android_bundle, "--profile", "--batches", f"1,{top}", "--rounds", "4", "--calls", "3",
                   "--warmup", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    got = json.loads(out.read_text())
    assert list(got) == ["format", "runner", "backend", "bundle_checksum", "device", "versions", "warmup", "rounds",
                         "calls", "prime_ms", "batches", "peak_rss_mb", "executed"]
    assert (got["format"], got["runner"], got["backend"]) == ("edgeexit-device-profile/1", "cpp", "executorch")
    assert got["bundle_checksum"] == manifest["checksum"]
    from edgeexit.device_runner import device_info, profile_device

    assert got["device"] == device_info()  # hostname, system, machine, cpus, cpu: as the Python runner sees them
    assert got["versions"] == {"executorch": importlib.metadata.version("executorch"),
                               "runner": manifest["edgeexit_version"]}
    assert (got["warmup"], got["rounds"], got["calls"]) == (2, 4, 3)
    assert got["prime_ms"] == timing.PRIME_MS  # each figure primed as the Python runner primes it
    assert list(got["batches"]) == ["1", str(top)]
    for table in got["batches"].values():
        assert set(table) == profile_keys(manifest)
        for name, figures in table.items():
            assert len(figures) == 4 and all(isinstance(ms, float) and 0 < ms < 10_000 for ms in figures), name
    assert isinstance(got["peak_rss_mb"], float) and got["peak_rss_mb"] > 1
    # the Python device runner's document of the same bundle: the same keys, entries and device description
    py = profile_device(android_bundle, backend="executorch", batches=[1], rounds=1, calls=1, warmup=0)
    # (threads: the Python runner records the pool it pinned; the C++ runner does not yet)
    assert set(got) == set(py) - {"runner_location", "threads"}, set(py) ^ set(got)
    assert set(got["batches"]["1"]) == set(py["batches"]["1"])
    assert got["device"] == py["device"]
    # the same work behind every entry (tests/test_cpp_trust.py checks the forced exits on more thresholds)
    assert got["executed"] == py["executed"], (got["executed"], py["executed"])


def test_profile_defaults_and_a_batch_outside_the_range(cpp_build, android_bundle):
    top = json.loads((android_bundle / "manifest.json").read_text())["batch"]["max"]
    res = run_bare(cpp_build, android_bundle, "--profile", "--rounds", "1", "--calls", "1", "--warmup", "0")
    assert res.returncode == 0, res.stderr
    assert list(json.loads(res.stdout)["batches"]) == ["1", str(top)]  # 1 and batch.max by default
    res = run_bare(cpp_build, android_bundle, "--profile", "--batches", f"1,{top + 1}", "--rounds", "1")
    assert res.returncode == 1 and res.stdout == "", res.stderr
    assert f"batch {top + 1} is outside the bundle's batch range" in res.stderr, res.stderr


def test_host_profiles_through_the_cpp_runner_like_the_python_one(cpp_build, android_bundle):
    """`edgeexit profile --runner cpp` (what an adb device runs) gives the same table as the Python runner."""
    from edgeexit.profile import profile_bundle

    binary = cpp_build / "edgeexit_runner"
    cpp = profile_bundle(android_bundle, runner="cpp", runner_binary=binary, rounds=3, calls=1, warmup=1, batches=[1, 3])
    py = profile_bundle(android_bundle, rounds=3, calls=1, warmup=1, batches=[1, 3])
    assert cpp["runner"] == "cpp" and py["runner"] == "python"
    for b in ("1", "3"):
        c, p = cpp["batches"][b], py["batches"][b]
        assert [sorted(k for k in ("segment", "head", "static") if e[k]) for e in c["exits"]] == \
               [sorted(k for k in ("segment", "head", "static") if e[k]) for e in p["exits"]]
        assert c["noise"]["null_ratio"] is not None and all(e["cumulative"]["p50_ms"] > 0 for e in c["exits"])


def test_what_a_phone_gets_runs_alone(cpp_build, android_bundle, tmp_path):
    """`profile --device adb://` pushes `runner_files` and the bundle into one folder and runs `runner_command` there.
    The same files, copied to a fresh folder, run --verify and the profile in an empty environment (env -i: no
    LD_LIBRARY_PATH, no PATH): edgeexit's code is inside the runner, ExecuTorch's libraries beside it, and every
    object the loader maps, at start-up or later, is in that folder or the system's; none is in the build tree, the
    venv or the checkout."""
    from edgeexit.devices import RUNNER_NAME, RunnerOptions, read_device_profile, runner_command, runner_files

    files = runner_files(cpp_build / "edgeexit_runner")
    names = [name for name, _ in files]
    assert names[0] == RUNNER_NAME and "libedgeexit.so" not in names, names
    assert {"libexecutorch.so", "libexecutorch_backend_xnnpack.so", "libexecutorch_kernels_optimized.so"} <= set(names)
    phone = tmp_path / "phone"  # what AdbDevice.stage makes on the phone
    phone.mkdir()
    for name, local in files:
        shutil.copy(local, phone / name)
    shutil.copytree(android_bundle, phone / "bundle")

    def loaded(stderr: str) -> set[Path]:
        """The objects the dynamic loader initialised (LD_DEBUG=files), the runner's own libraries and dlopen()ed
        ones alike."""
        return {Path(p) for p in re.findall(r"calling init: (\S+)", stderr)}

    def outside(paths: set[Path]) -> list[Path]:
        return [p for p in paths if p.resolve().parent != phone.resolve()
                and not str(p.resolve()).startswith(("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/"))]

    ldd = run_checked(["env", "-i", require_tool(shutil.which("ldd"), "ldd"), str(phone / RUNNER_NAME)], "ldd")
    resolved = {Path(p) for p in re.findall(r"=> (\S+)", ldd.stdout)}
    assert "not found" not in ldd.stdout and not outside(resolved), ldd.stdout
    assert {p.name for p in resolved if p.parent == phone} == set(names[1:]), ldd.stdout

    res = subprocess.run(["env", "-i", "LD_DEBUG=files", f"./{RUNNER_NAME}", "bundle", "--verify"], cwd=phone,
                         check=False, capture_output=True, text=True, errors="replace", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    check_verification(json.loads(res.stdout), android_bundle, failing=None)
    objects = loaded(res.stderr)
    assert {p.name for p in objects} >= set(names[1:]) and not outside(objects), sorted(map(str, objects))

    # the profile through the very command `adb shell` runs (LD_LIBRARY_PATH: the folder), from an empty environment
    args = RunnerOptions(batches=[1], rounds=2, calls=1, warmup=1).argv() + ["--out", "profile.json"]
    res = subprocess.run(["env", "-i", "/bin/sh", "-c", runner_command(str(phone), "bundle", args)], check=False,
                         capture_output=True, text=True, errors="replace", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    profile = read_device_profile((phone / "profile.json").read_bytes(), "the copied runner")
    assert profile["runner"] == "cpp" and list(profile["batches"]) == ["1"]
    assert profile["bundle_checksum"] == json.loads((android_bundle / "manifest.json").read_text())["checksum"]


@pytest.mark.parametrize("damage", ["text", "truncated"])
def test_runner_files_refuses_what_is_not_a_runner(damage, cpp_build, tmp_path):
    """A --runner-binary that is neither an ELF file nor a script (a text file), or an ELF file cut short, is refused
    before anything is pushed, with a ConfigError naming the file; a script (a user's wrapper) goes alone."""
    from edgeexit.devices import RUNNER_NAME, runner_files
    from edgeexit.errors import ConfigError

    fake = tmp_path / "edgeexit_runner"
    if damage == "text":
        fake.write_text("edgeexit_runner was built in build/executorch\n")
    else:
        fake.write_bytes((cpp_build / "edgeexit_runner").read_bytes()[:4096])
    with pytest.raises(ConfigError, match="not an ELF file edgeexit can read") as err:
        runner_files(fake)
    assert str(fake) in str(err.value)
    script = tmp_path / "wrapper"
    script.write_text("#!/bin/sh\nexec /data/local/tmp/edgeexit_runner \"$@\"\n")
    assert runner_files(script) == [(RUNNER_NAME, script.resolve())]
