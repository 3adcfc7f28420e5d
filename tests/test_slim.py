"""The deployable bundle (edgeexit.bundle.slim, `export --slim`, the default): `export` and `build` write it beside
the development bundle; it holds only what the device runs, and every runner verifies and runs it exactly as it
does the development bundle: Python (load_bundle, EarlyExitRuntime on onnxruntime and ExecuTorch), the C++ runner
(edgeexit_runner, --verify), the Kotlin glue on the host JVM, and `edgeexit engines` (TensorRT-RTX, CPU-only build).
A listed file that is missing is refused by each of them; `compare` still runs on the development bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_android_jvm import java, jvm_app, run_jvm  # noqa: F401 (jvm_app, cpp_build: fixtures)
from test_cpp_runner import check_verification, cpp_build, python_reference, resign, run_runner  # noqa: F401
from typer.testing import CliRunner

from edgeexit.bundle import MANIFEST, load_bundle
from edgeexit.bundle.slim import bundle_bytes, deployable_bytes, slim_path, write_slim
from edgeexit.cli import app
from edgeexit.errors import BundleError, ConfigError
from edgeexit.runtime import EarlyExitRuntime

PTE = "pte/program.pte"
BPTE = "pte/program.bpte"
ALWAYS = {".edgeexit-bundle", "manifest.schema.json", "calibration.json"}


@pytest.fixture(scope="module")
def spread_slim(spread_bundle, tmp_path_factory) -> Path:
    """The deployable bundle of the spread android bundle (every exit answers some inputs), without test vectors."""
    return write_slim(spread_bundle, tmp_path_factory.mktemp("slim") / "bundle").root


def without(bundle: Path, rel: str, dest: Path) -> Path:
    """A copy of `bundle` at `dest` with the listed file `rel` deleted (the manifest unchanged: it still lists it)."""
    out = Path(shutil.copytree(bundle, dest))
    (out / rel).unlink()
    return out


def same_run(got, want) -> None:
    assert got.exit_index.tolist() == want.exit_index.tolist()
    assert got.predictions.tolist() == want.predictions.tolist()
    np.testing.assert_array_equal(got.logits, want.logits)


# ------------------------------------------------------------------------------------------------ what is written

def test_build_writes_both_and_says_both_sizes(built):
    run, output = built
    dev, slim = load_bundle(run / "bundle"), load_bundle(run / "bundle-slim")
    flat = " ".join(output.split())
    assert f"deployable bundle {run / 'bundle-slim'}:" in flat and f"development bundle {run / 'bundle'}:" in flat
    assert dev.manifest.formats == ["onnx", "pt2"] and slim.manifest.formats == ["onnx"]
    m = slim.manifest
    # the segments and their batch-1 form (onnx/fused.onnx): no reference, probes, .pt2, vectors or reports
    segments = {e.segment["onnx"].file for e in m.exits} | {m.fused.segment["onnx"].file}
    assert m.fused == dev.manifest.fused and set(m.files) == ALWAYS | segments
    assert m.reference.segment == {} and all(e.head is None and e.static is None for e in m.exits)
    assert m.reference.macs == dev.manifest.reference.macs and m.full_macs == dev.manifest.full_macs  # the yardstick
    assert [e.threshold for e in m.exits] == [e.threshold for e in dev.exits] and m.class_names == dev.manifest.class_names
    assert all(m.files[f] == dev.manifest.files[f] for f in segments)  # the same bytes, not a new lowering
    assert bundle_bytes(slim) < bundle_bytes(dev) / 2  # the weights twice (segments, fused), not five times
    assert deployable_bytes(dev) == bundle_bytes(slim) - (slim.root / MANIFEST).stat().st_size  # sized without writing


def test_export_writes_the_pte_deployable_bundle(android_bundle):
    """An android export ships the one .pte; the reference and probes stay in the manifest as methods of it (free:
    its weights are stored once), so the on-device profiler still has them."""
    dev, slim = load_bundle(android_bundle), load_bundle(slim_path(android_bundle))
    m = slim.manifest
    assert m.formats == ["pte"] and set(m.files) == ALWAYS | {PTE}  # no test vectors without --slim-vectors
    assert m.files[PTE] == dev.manifest.files[PTE]
    assert m.reference.segment["pte"].method == "reference" and m.exits[0].head is not None
    assert bundle_bytes(slim) < bundle_bytes(dev) / 2


def test_export_slim_vectors_and_no_slim(built, tmp_path):
    run, _ = built
    out = tmp_path / "b"
    res = CliRunner().invoke(app, ["export", "--run-dir", str(run), "--out", str(out), "--slim-vectors"])
    assert res.exit_code == 0, res.output
    assert "vectors.npz" in load_bundle(slim_path(out)).manifest.files
    flat = " ".join(res.output.split())
    assert f"deployable bundle {slim_path(out)}:" in flat and "ship this" in flat
    res = CliRunner().invoke(app, ["export", "--run-dir", str(run), "--out", str(tmp_path / "c"), "--no-slim"])
    assert res.exit_code == 0, res.output
    assert not slim_path(tmp_path / "c").exists() and "no deployable bundle (--no-slim)" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["export", "--run-dir", str(run), "--out", str(out), "--no-slim"])
    assert res.exit_code == 0, res.output  # the deployable bundle of the export before is not this one's: said so
    assert f"{slim_path(out)} is an earlier export's, not this bundle's" in " ".join(res.output.split())


def test_a_user_folder_where_the_slim_bundle_goes_is_refused_before_export(built, tmp_path):
    run, _ = built
    mine = tmp_path / "b-slim"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    res = CliRunner().invoke(app, ["export", "--run-dir", str(run), "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "refusing to write a bundle over a path" in " ".join(res.output.split())
    assert (mine / "notes.txt").read_text() == "mine" and not (tmp_path / "b").exists()


def test_a_failed_deployable_write_is_an_error_that_says_what_was_written(built, tmp_path, monkeypatch):
    """The development bundle is swapped in before the deployable one is cut from it: a full disk then fails the
    export, saying which of the two is new (never a silent, stale RUN/bundle-slim)."""
    import edgeexit.bundle.slim as slim

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    run, _ = built
    monkeypatch.setattr(slim, "write_slim", full)
    res = CliRunner().invoke(app, ["export", "--run-dir", str(run), "--out", str(tmp_path / "b")])
    flat = " ".join(res.output.split())
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert f"the development bundle {tmp_path / 'b'} was written, the deployable bundle {tmp_path / 'b-slim'} was " \
           "not" in flat and "No space left on device" in flat
    load_bundle(tmp_path / "b")


# ------------------------------------------------------------------------------------------------ Python runners

def test_onnxruntime_runs_the_slim_bundle_like_the_development_one(built):
    run, _ = built
    x = np.random.default_rng(3).standard_normal((24, *load_bundle(run / "bundle").input_shape)).astype(np.float32)
    slim = EarlyExitRuntime.open(run / "bundle-slim")
    same_run(slim.run(x), EarlyExitRuntime.open(run / "bundle").run(x))
    with pytest.raises(ConfigError, match="no reference model") as err:
        slim.reference()  # said, with where the reference is
    assert "development bundle" in err.value.hint


def test_executorch_runs_the_slim_bundle_like_the_development_one(spread_bundle, spread_slim, inputs):
    want = python_reference(spread_bundle, inputs)
    assert len(set(want.exit_index.tolist())) >= 2  # every exit answers some inputs
    same_run(python_reference(spread_slim, inputs), want)


def test_compare_still_runs_on_the_development_bundle(built):
    run, _ = built
    res = CliRunner().invoke(app, ["compare", str(run / "bundle"), "--samples", "16"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("rel", [PTE, "calibration.json", ".edgeexit-bundle"])
def test_python_refuses_a_slim_bundle_missing_a_listed_file(spread_slim, rel, tmp_path):
    bundle = without(spread_slim, rel, tmp_path / "b")
    with pytest.raises(BundleError, match=f"bundle file is missing: {rel}"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match="missing"):
        EarlyExitRuntime.open(bundle, backend="executorch")


def test_trust_checks_hold_on_the_slim_bundle(spread_slim, spread_bundle, tmp_path):
    """Nothing is looser for being small: an unlisted file (a .pt2 carried over), a `files` entry dropped without
    re-sealing, and a re-sealed manifest that lists a file the bundle lacks are all refused."""
    extra = Path(shutil.copytree(spread_slim, tmp_path / "extra"))
    (extra / "pt2").mkdir()
    shutil.copy(spread_bundle / "pt2" / "seg0.pt2", extra / "pt2" / "seg0.pt2")
    with pytest.raises(BundleError, match="does not list"):
        load_bundle(extra)
    edited = Path(shutil.copytree(spread_slim, tmp_path / "edited"))
    raw = json.loads((edited / MANIFEST).read_text())
    del raw["files"]["calibration.json"]
    (edited / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="modified after the bundle was written"):
        load_bundle(edited)
    listed = resign(Path(shutil.copytree(spread_slim, tmp_path / "listed")),
                    lambda m: m["files"].__setitem__("vectors.npz", "0" * 64))
    with pytest.raises(BundleError, match="bundle file is missing: vectors.npz"):
        load_bundle(listed)


# ------------------------------------------------------------------------------------------------ C++ and JVM

def test_cpp_runner_runs_the_slim_bundle(cpp_build, spread_slim, inputs, tmp_path):
    want = python_reference(spread_slim, inputs)
    res = run_runner(cpp_build, spread_slim, inputs, tmp_path, "--logits", str(tmp_path / "logits.f32"))
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["exit_index"] == want.exit_index.tolist() and got["predictions"] == want.predictions.tolist()
    logits = np.fromfile(tmp_path / "logits.f32", dtype="<f4").reshape(want.logits.shape)
    np.testing.assert_allclose(logits, want.logits, rtol=0, atol=1e-4)


def test_cpp_runner_verifies_the_slim_bundle(cpp_build, spread_bundle, spread_slim, tmp_path):
    """Without vectors --verify says where to find them; with the development bundle's (the same program.pte) or
    its own (--slim-vectors) every method passes."""
    runner = str(cpp_build / "edgeexit_runner")

    def verify(bundle: Path, *extra: str):
        return subprocess.run([runner, str(bundle), "--verify", *extra], capture_output=True, text=True,
                              errors="replace", timeout=120)

    res = verify(spread_slim)
    assert res.returncode != 0 and "the bundle has no test vectors" in res.stderr and "--bpte" in res.stderr
    res = verify(spread_slim, "--bpte", str(spread_bundle / BPTE))
    assert res.returncode == 0, res.stderr
    check_verification(json.loads(res.stdout), spread_slim, failing=None)
    with_vectors = write_slim(spread_bundle, tmp_path / "v", vectors=True).root
    assert BPTE in load_bundle(with_vectors).manifest.files
    res = verify(with_vectors)
    assert res.returncode == 0, res.stderr
    check_verification(json.loads(res.stdout), with_vectors, failing=None)


@pytest.mark.parametrize("rel", [PTE, "calibration.json"])
def test_cpp_runner_refuses_a_slim_bundle_missing_a_listed_file(cpp_build, spread_slim, inputs, rel, tmp_path):
    res = run_runner(cpp_build, without(spread_slim, rel, tmp_path / "b"), inputs, tmp_path)
    assert res.returncode != 0 and res.stdout == ""
    assert f"bundle file is missing: {rel}" in res.stderr, res.stderr


def test_jvm_runs_and_refuses_the_slim_bundle(jvm_app, spread_slim, inputs, tmp_path):
    want = python_reference(spread_slim, inputs)
    res = run_jvm(jvm_app, spread_slim, inputs, tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["exits"] == want.exit_index.tolist() and got["predictions"] == want.predictions.tolist()
    res = run_jvm(jvm_app, without(spread_slim, PTE, tmp_path / "b"), inputs, tmp_path)
    assert res.returncode == 1 and "EdgeExitException" in res.stderr and f"bundle file is missing: {PTE}" in res.stderr
    res = java(jvm_app, str(spread_slim), "--verify")  # no vectors: an exception that says how to get them
    assert res.returncode == 1 and "no test vectors" in res.stderr and "--slim-vectors" in res.stderr


# ------------------------------------------------------------------------------------------------ TensorRT

@pytest.fixture(scope="module")
def jetson_slim(built, tmp_path_factory) -> Path:
    """The tiny build exported for jetson; its deployable bundle (the ONNX segments the engines are built from)."""
    run, _ = built
    out = tmp_path_factory.mktemp("jetson") / "bundle"
    res = CliRunner().invoke(app, ["export", "--run-dir", str(run), "--target", "jetson", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return slim_path(out)


def test_engines_build_from_the_slim_jetson_bundle(jetson_slim, tmp_path):
    from edgeexit.engines import build_engines, describe
    from edgeexit.runtime.engine_record import METADATA

    before = load_bundle(jetson_slim)
    assert before.manifest.formats == ["onnx"] and before.manifest.reference.segment == {}
    dest = tmp_path / "deploy"
    b = build_engines(jetson_slim, dest, compute_capabilities=["8.6"], flavour="tensorrt_rtx", log=lambda _: None)
    m = load_bundle(dest).manifest
    assert m.formats == ["engine", "onnx"] and METADATA in m.files and m.reference.segment == {}
    assert {f for f in m.files if f.endswith(".engine")} == {e.segment["engine"].file for e in m.exits}
    assert b.root == load_bundle(dest).root
    assert describe(b, dest).startswith(f"engines: {len(m.exits)} segments, tensorrt_rtx")  # no reference claimed
    # the deployable bundle of the built engines: the engines and their record, no ONNX
    engines_only = write_slim(dest, tmp_path / "engines-only").manifest
    assert engines_only.formats == ["engine"] and METADATA in engines_only.files
    assert not any(f.endswith(".onnx") for f in engines_only.files)


def test_engines_refuse_a_slim_bundle_missing_an_onnx(jetson_slim, tmp_path):
    from edgeexit.engines import build_engines

    bundle = without(jetson_slim, "onnx/seg0.onnx", tmp_path / "b")
    with pytest.raises(BundleError, match="bundle file is missing: onnx/seg0.onnx"):
        build_engines(bundle, tmp_path / "out", compute_capabilities=["8.6"], flavour="tensorrt_rtx", log=lambda _: None)
    assert not (tmp_path / "out").exists()
