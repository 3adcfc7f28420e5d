"""The ExecuTorch target on ExecuTorch's own runtime: one .pte, a method per segment, through the same exit loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_run
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle
from edgeexit.cli import app
from edgeexit.runtime import EarlyExitRuntime

runner = CliRunner()


@pytest.fixture(scope="module")
def android(built, tmp_path_factory):
    """The tiny build's checkpoint exported for target android (calibrated to spread samples over the exits)."""
    run = copy_run(built, tmp_path_factory.mktemp("android_run"))
    # fractions: a share of the samples leaves at every exit, whatever the (untrained) scores look like
    assert runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7", "--policy", "fractions"]).exit_code == 0
    res = runner.invoke(app, ["export", "--run-dir", str(run), "--target", "android"])
    assert res.exit_code == 0, res.output
    return load_bundle(run / "bundle")


def _inputs(b, n, seed=0):
    """n test-split images (random inputs all leave a tiny model at its first exit)."""
    from edgeexit.pipeline import test_split

    x = test_split(b, "test")[0]
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)]


def test_one_program_with_a_method_per_segment(android):
    m = android.manifest
    assert m.format == "pte" and m.formats == ["pte", "onnx", "pt2"] and m.delegate == "xnnpack" and m.batch.max == 8
    assert {e.segment["pte"].file for e in m.exits} == {"pte/program.pte"} == {m.reference.segment["pte"].file}
    assert [e.segment["pte"].method for e in m.exits] == [f"seg{k}" for k in range(len(m.exits))]
    assert EarlyExitRuntime.open(android).backend.name == "executorch"  # the target's backend, from the manifest


def test_each_method_matches_its_torch_program(android):
    """Per segment, the .pte method against the torch.export program it was lowered from, <= 1e-4."""
    et = EarlyExitRuntime.open(android, "executorch")
    pt = EarlyExitRuntime.open(android, "torch")
    x = _inputs(android, 8)
    for a, b in zip(et.exit_outputs(x), pt.exit_outputs(x)):
        np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(a["score"], b["score"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(et.reference().run(x), pt.reference().run(x), atol=1e-4, rtol=0)


def test_batch_sizes_give_identical_answers(android):
    rt = EarlyExitRuntime.open(android)
    x = _inputs(android, 24, seed=1)
    whole = rt.run(x)
    assert len(set(whole.exit_index.tolist())) >= 2, "the calibration should spread samples over the exits"
    for batch in (1, 7, android.manifest.batch.max):
        parts = [rt.run(x[i:i + batch]) for i in range(0, len(x), batch)]
        np.testing.assert_array_equal(np.concatenate([p.exit_index for p in parts]), whole.exit_index)
        np.testing.assert_array_equal(np.concatenate([p.predictions for p in parts]), whole.predictions)


def test_executorch_agrees_with_onnxruntime_through_compare(android, tmp_path):
    """The bundle carries ONNX too: `compare` runs the .pte, the ONNX files and the .pt2 programs on the same inputs."""
    from edgeexit.pipeline import test_split

    x = test_split(android, "test", 128)[0]
    res = runner.invoke(app, ["compare", str(android.root), "--samples", "128", "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["backends"] == ["executorch", "onnxruntime", "torch"]
    assert got["agreement"]["onnxruntime"] >= 0.999 and got["agreement"]["torch"] >= 0.999
    a, b = EarlyExitRuntime.open(android).run(x), EarlyExitRuntime.open(android, "onnxruntime").run(x)
    assert len(set(b.exit_index.tolist())) >= 2
    assert np.mean((a.exit_index == b.exit_index) & (a.predictions == b.predictions)) >= 0.999


def test_eval_and_profile_run_the_pte_with_no_special_case(android, tmp_path):
    res = runner.invoke(app, ["eval", str(android.root), "--limit", "32", "--json", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["backend"] == "executorch" and ev["samples"] == 32
    from edgeexit.profile import profile_bundle

    prof = profile_bundle(android, rounds=3, calls=1)
    assert prof["backend"] == "executorch" and len(prof["exits"]) == len(android.exits)
    assert torch.get_num_threads() >= 1


def test_int8_bundle_is_quantized_recalibrated_and_agrees_with_its_programs(built, tmp_path):
    """--precision int8: PT2E on the validation split, thresholds chosen again on the int8 program's own scores,
    ONNX left out (it cannot honour int8), and the .pte agrees with the quantized torch programs."""
    run = copy_run(built, tmp_path / "run")
    # fractions: a share of the samples leaves at every exit, whatever the (untrained) scores look like
    assert runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7", "--policy", "fractions"]).exit_code == 0
    res = runner.invoke(app, ["export", "--run-dir", str(run), "--target", "android", "--precision", "int8"])
    assert res.exit_code == 0, res.output
    b = load_bundle(run / "bundle")
    assert b.manifest.precision == "int8" and b.manifest.formats == ["pte", "pt2"]
    fp32 = json.loads((run / "calibration.json").read_text())
    int8 = json.loads((b.root / "calibration.json").read_text())
    assert int8["provenance"]["recalibrated_for"] == "int8" and int8["budget"] == fp32["budget"]
    from edgeexit.jsonio import from_jsonable
    from edgeexit.pipeline import manifest_threshold

    assert [e.threshold for e in b.exits[:-1]] == [pytest.approx(manifest_threshold(t, False))
                                                   for t in from_jsonable(int8["thresholds"][:-1])]
    res = runner.invoke(app, ["compare", str(b.root), "--samples", "128", "--json", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "c.json").read_text())
    assert got["backends"] == ["executorch", "torch"] and got["agreement"]["torch"] >= 0.999


def test_profile_reads_per_segment_and_per_operator_times_from_etdump(android):
    run = android.root.parent
    res = runner.invoke(app, ["profile", "--run-dir", str(run), "--rounds", "3", "--etdump"])
    assert res.exit_code == 0, res.output
    assert "ETDump" in res.output
    timings = json.loads((run / "profile.json").read_text())["etdump"]
    methods = [m["method"] for m in timings["methods"]]
    assert methods == [e.segment["pte"].method for e in android.exits] + ["reference"]
    for m in timings["methods"]:
        assert m["ms"] > 0 and m["p90_ms"] >= m["ms"] and m["operator_count"] >= 1
        assert all(op["ms"] >= 0 for op in m["operators"]) and m["operators"][0]["name"]


def test_bundled_program_vectors_verify_and_a_tampered_vector_fails(android, tmp_path):
    """pte/program.bpte holds one MethodTestSuite per method; compare runs them on ExecuTorch's runtime. A vector
    edited (and the manifest re-sealed, as a forger would) fails the check."""
    import shutil

    from executorch.devtools.bundled_program.serialize import (
        convert_from_flatbuffer,
        convert_to_flatbuffer,
    )

    from edgeexit.bundle import digest, sha256

    res = runner.invoke(app, ["compare", str(android.root), "--samples", "0", "--backends", "executorch"])
    assert res.exit_code == 0, res.output
    for method in [e.segment["pte"].method for e in android.exits] + ["reference"]:
        assert f"BundledProgram test case of {method}: passed" in res.output
    bad = Path(shutil.copytree(android.root, tmp_path / "bundle"))
    vectors = json.loads(convert_from_flatbuffer((bad / "pte" / "program.bpte").read_bytes()))
    suite = next(s for s in vectors["method_test_suites"] if s["method_name"] == "seg0")
    logits = suite["test_cases"][0]["expected_outputs"][1]["val"]
    logits["data"][:4] = list(np.float32(100.0).tobytes())
    (bad / "pte" / "program.bpte").write_bytes(convert_to_flatbuffer(json.dumps(vectors)))
    raw = json.loads((bad / "manifest.json").read_text())
    raw["files"]["pte/program.bpte"] = sha256(bad / "pte" / "program.bpte")
    raw["checksum"] = digest(raw)
    (bad / "manifest.json").write_text(json.dumps(raw))
    res = runner.invoke(app, ["compare", str(bad), "--samples", "0", "--backends", "executorch"])
    assert res.exit_code == 1 and "BundledProgram test case of seg0: failed" in res.output
    assert "test case of seg1: passed" in res.output
