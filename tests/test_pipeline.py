"""The whole path on a tiny model and synthetic data: build, reload, evaluate; stages alone; tampering refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import QUICK, copy_bundle, copy_run
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle
from edgeexit.cli import app
from edgeexit.errors import BundleError, CheckpointError
from edgeexit.evaluate import evaluate_bundle
from edgeexit.runtime import EarlyExitRuntime
from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint

runner = CliRunner()


def test_build_prints_the_table_and_writes_a_verified_bundle(built):
    run, output = built
    assert "early exit" in output and "mean MACs" in output and "measured time on onnxruntime" in output
    b = load_bundle(run / "bundle")
    assert set(b.manifest.files) >= {"onnx/seg0.onnx", "onnx/reference.onnx", "pt2/seg0.pt2", "pt2/reference.pt2",
                                     "calibration.json", "report/report.md", "report/eval.json", "report/report.json",
                                     "report/profile.json", "manifest.schema.json", "vectors.npz"}
    assert b.manifest.format == "onnx" and b.manifest.formats == ["onnx", "pt2"] and b.manifest.batch.max == 64
    report = (run / "bundle" / "report" / "report.md").read_text()
    assert "| accuracy |" in report
    saved = json.loads((run / "bundle" / "report" / "eval.json").read_text())
    again = evaluate_bundle(run / "bundle", repeats=1, time_batches=1)
    # accuracy, exit histogram and MACs are reproduced exactly by a fresh load of the bundle
    for key in ("full_accuracy", "early_exit_accuracy", "exit_histogram", "macs_fraction"):
        assert again[key] == saved[key]


def _unpruned_bundle(built, tmp_path):
    """A bundle of the whole trained network (the build's own may be pruned)."""
    copy_run(built, tmp_path)
    for args in (["calibrate", "--budget", "0.7"], ["export"]):
        res = runner.invoke(app, [*args, "--run-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
    return load_bundle(tmp_path / "bundle")


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_forced_final_exit_reproduces_the_unsplit_model(built, tmp_path, backend):
    run, _ = built
    b = _unpruned_bundle(built, tmp_path)
    rt = EarlyExitRuntime.open(b, backend).with_thresholds([None] * len(b.exits))
    x = np.random.default_rng(0).standard_normal((9, *b.input_shape)).astype(np.float32)
    np.testing.assert_allclose(rt.run(x).logits, rt.reference().run(x), atol=1e-4, rtol=1e-4)
    net, _ = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(rt.run(x).logits, net.unsplit()(torch.from_numpy(x)).numpy(), atol=1e-4, rtol=1e-4)


def test_stages_run_alone_on_the_previous_artifact(built, tmp_path):
    copy_run(built, tmp_path)
    for args in (["calibrate", "--budget", "0.5", "--policy", "search"], ["export"]):
        res = runner.invoke(app, [*args, "--run-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
    for backend in ("onnxruntime", "torch"):
        res = runner.invoke(app, ["eval", str(tmp_path / "bundle"), "--backend", backend, "--json", str(tmp_path / "e.json")])
        assert res.exit_code == 0, res.output
        figures = json.loads((tmp_path / "e.json").read_text())
        assert figures["samples"] == 128 and sum(figures["exit_histogram"]) == 128 and figures["backend"] == backend


def test_resume_continues_training(tmp_path):
    # under the constant schedule more epochs change no step: the resume goes on without --adopt
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path), "--epochs", "1", "--schedule", "constant", *QUICK])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 0
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path), "--epochs", "2", "--schedule", "constant", "--resume",
                              *QUICK])
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 2



def test_tampered_segment_is_refused(built, tmp_path):
    b = copy_bundle(built, tmp_path)
    with open(b / "onnx" / "seg1.onnx", "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match="modified: onnx/seg1.onnx"):
        load_bundle(b)
    res = runner.invoke(app, ["eval", str(b)])
    assert res.exit_code == 2 and "modified" in res.output and "Traceback" not in res.output


def test_tampered_manifest_is_refused(built, tmp_path):
    b = copy_bundle(built, tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    m["exits"][0]["threshold"] = 0.0  # make everything exit early
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="manifest.json was modified"):
        load_bundle(b)


@pytest.mark.parametrize("damage", ["delete", "truncate_manifest"])
def test_broken_bundles_are_refused(built, tmp_path, damage):
    b = copy_bundle(built, tmp_path)
    if damage == "delete":
        (b / "calibration.json").unlink()
        match = "missing: calibration.json"
    else:
        (b / "manifest.json").write_text((b / "manifest.json").read_text()[:100])
        match = "not valid JSON"
    with pytest.raises(BundleError, match=match):
        load_bundle(b)


def test_corrupt_checkpoint_is_refused(built, tmp_path):
    run, _ = built
    data = (run / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    res = runner.invoke(app, ["calibrate", "--run-dir", str(tmp_path)])
    assert res.exit_code == 2 and "corrupt" in res.output


def test_mismatched_checkpoint_is_refused(built, tmp_path):
    run, _ = built
    ckpt = load_checkpoint(run / "checkpoint.pt")
    ckpt["model_config"]["backbone"] = "cifar_resnet20"
    with pytest.raises(CheckpointError, match="do not match"):
        model_from_checkpoint(ckpt)


def test_unmeetable_budget_is_a_clear_error(built, tmp_path):
    copy_run(built, tmp_path)
    res = runner.invoke(app, ["calibrate", "--run-dir", str(tmp_path), "--budget", "0.01"])
    assert res.exit_code == 2 and "error" in res.output.lower()


def test_build_prunes_profiles_and_reports(built):
    run, output = built
    assert "kept exits" in output and "per-exit latency" in output
    b = load_bundle(run / "bundle")
    pr = json.loads((run / "pruned.json").read_text())
    assert [e.index for e in b.exits] == list(range(len(pr["kept_exits"])))
    assert len(b.manifest.ensemble.weights) == len(pr["kept_exits"])
    prof = json.loads((run / "bundle" / "report" / "profile.json").read_text())
    assert len(prof["exits"]) == len(b.exits) and all(e["p50_ms"] > 0 for e in prof["exits"])
    assert prof["provenance"]["checkpoint_sha256"] == b.manifest.provenance.checkpoint_sha256
    assert (run / "bundle" / "report" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Per-exit latency" in (run / "bundle" / "report" / "report.md").read_text()


def test_ensemble_mode_reproduces_the_pruned_aep_prediction(built):
    """The runtime's no-early-stop mode = argmax Σ β_i·O_i over the kept exits (papers/000, Eq. 3)."""
    run, _ = built
    b = load_bundle(run / "bundle")
    net, _ = model_from_checkpoint(load_checkpoint(run / "pruned.pt"))
    x = np.random.default_rng(5).standard_normal((11, *b.input_shape)).astype(np.float32)
    got = EarlyExitRuntime.open(b).run_ensemble(x)
    with torch.no_grad():
        outs = net(torch.from_numpy(x))
    want = sum(beta * o.numpy() for beta, o in zip(b.manifest.ensemble.weights, outs))
    np.testing.assert_allclose(got.logits, want, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(got.predictions, want.argmax(1))


def test_prune_command_and_millisecond_budget(built, tmp_path):
    copy_run(built, tmp_path)
    res = runner.invoke(app, ["prune", "--run-dir", str(tmp_path), "--mode", "mix"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "pruned.json").read_text())["mode"] == "mix"
    # a millisecond budget before any profile is a clear error
    res = runner.invoke(app, ["calibrate", "--run-dir", str(tmp_path), "--budget", "1ms@cpu"])
    assert res.exit_code == 2 and "latency table" in res.output
    for args in (["calibrate", "--budget", "1.0"], ["export"], ["profile", "--rounds", "5"]):
        res = runner.invoke(app, [*args, "--run-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
    prof = json.loads((tmp_path / "profile.json").read_text())
    budget_ms = 0.5 * (prof["latency_ms"][0] + prof["latency_ms"][-1])
    res = runner.invoke(app, ["calibrate", "--run-dir", str(tmp_path), "--budget", f"{budget_ms}ms@cpu", "--recipe", "quick"])
    assert res.exit_code == 2 and "more samples than split" in res.output  # quick wants 2000, val has 128
    recipe = tmp_path / "r.toml"
    recipe.write_text('split = "val"\nsamples = 100\nseed = 1\n')
    res = runner.invoke(app, ["calibrate", "--run-dir", str(tmp_path), "--budget", f"{budget_ms}ms@cpu", "--recipe", str(recipe)])
    assert res.exit_code == 0, res.output
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert cal["cost_unit"] == "ms" and cal["mean_cost"] <= budget_ms + 1e-9 and cal["n_samples"] == 100
    assert cal["costs"] == prof["latency_ms"] and cal["reference_cost"] == prof["full"]["p50_ms"]
    assert cal["provenance"]["profile_sha256"]


def test_final_exit_answers_even_with_forced_thresholds(built):
    run, _ = built
    rt = EarlyExitRuntime.open(run / "bundle")
    x = np.random.default_rng(1).standard_normal((5, *rt.input_shape)).astype(np.float32)
    assert (rt.with_thresholds([math.inf] * rt.num_exits).run(x).exit_index == rt.num_exits - 1).all()
