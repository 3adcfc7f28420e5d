"""Temperature scaling per exit: never raises the calibration NLL, undoes a known over-confidence, is chosen before
the thresholds, is stored in the manifest, and is baked into every exported segment's score."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import copy_run
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle
from edgeexit.calibrate import Budget, calibrate_search, exit_scores
from edgeexit.calibrate.temperature import (
    expected_calibration_error,
    fit_temperature,
    fit_temperatures,
    nll,
    scale,
)
from edgeexit.cli import app
from edgeexit.models.scores import score_fn_torch
from edgeexit.runtime import EarlyExitRuntime


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), c=st.integers(2, 6), spread=st.floats(0.01, 30.0), seed=st.integers(0, 2**31 - 1))
def test_temperature_scaling_never_raises_the_nll(n, c, spread, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, c)) * spread).astype(np.float32)
    labels = rng.integers(0, c, n)
    t = fit_temperature(logits, labels)
    assert 0.05 <= t <= 20.0
    assert nll(logits, labels, t) <= nll(logits, labels, 1.0)
    # and the fit is the minimum, not just the fallback to T = 1: no nearby temperature does better
    for nearby in (t * 1.02, t / 1.02):
        if 0.05 <= nearby <= 20.0:
            assert nll(logits, labels, t) <= nll(logits, labels, nearby) + 1e-9


def test_a_known_over_confidence_is_undone():
    """Logits drawn from a calibrated model, then multiplied by 4: the fitted T is about 4 and the ECE drops."""
    rng = np.random.default_rng(0)
    true = rng.standard_normal((4000, 5)) * 1.5
    labels = np.array([rng.choice(5, p=np.exp(z) / np.exp(z).sum()) for z in true])
    hot = (4.0 * true).astype(np.float32)
    temps, report = fit_temperatures(np.stack([hot, true.astype(np.float32)]), labels)
    assert temps[0] == pytest.approx(4.0, rel=0.1) and temps[1] == pytest.approx(1.0, rel=0.1)
    assert report["ece_after"][0] < 0.5 * report["ece_before"][0]
    assert report["nll_after"][0] < report["nll_before"][0]
    assert expected_calibration_error(hot, labels, temps[0]) == report["ece_after"][0]


def test_thresholds_are_chosen_on_the_scaled_scores():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 300, 4)).astype(np.float32) * 3
    labels = rng.integers(0, 4, 300)
    temps = [2.5, 0.5, 1.0]
    cal = calibrate_search(logits, labels, [1.0, 2.0, 3.0], Budget("macs_fraction", 0.6), reference_cost=3.0,
                           temperatures=temps)
    assert cal.temperatures == temps
    scores = exit_scores(scale(logits, temps), "max_softmax")
    # every finite threshold is one of the scaled calibration scores at its exit
    for k, th in enumerate(cal.thresholds[:-1]):
        assert not np.isfinite(th) or np.isclose(scores[k], th, rtol=0, atol=0).any()


def test_exported_score_reads_the_scaled_logits(tiny_net):
    seg = tiny_net.exit_segment(0, score_fn_torch("max_softmax"), temperature=2.0)
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        _, logits, score = seg(x)
        want = torch.softmax(tiny_net(x)[0] / 2.0, dim=-1).amax(-1)
    assert torch.equal(logits, tiny_net(x)[0])  # the logits output is not scaled
    torch.testing.assert_close(score, want, rtol=0, atol=1e-7)


def test_calibration_reports_and_the_bundle_applies_the_temperatures(built, tmp_path):
    run = copy_run(built, tmp_path)
    res = CliRunner().invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7"])
    assert res.exit_code == 0, res.output
    assert "temperature scaling" in res.output and "ECE before" in res.output and "ECE after" in res.output
    cal = json.loads((run / "calibration.json").read_text())
    temps, err = cal["temperatures"], cal["calibration_error"]
    assert len(temps) == len(cal["thresholds"]) == len(err["ece_before"]) == len(err["ece_after"])
    assert all(a <= b for a, b in zip(err["nll_after"], err["nll_before"]))
    res = CliRunner().invoke(app, ["export", "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    bundle = load_bundle(run / "bundle")
    assert [e.temperature for e in bundle.exits] == [pytest.approx(t) for t in temps]
    assert any(abs(t - 1.0) > 1e-3 for t in temps)  # a real scaling, not the identity
    x = np.random.default_rng(2).standard_normal((16, *bundle.input_shape)).astype(np.float32)
    outs = EarlyExitRuntime.open(bundle, "onnxruntime").exit_outputs(x)
    for k, (o, t) in enumerate(zip(outs, temps)):
        want = exit_scores(scale(o["logits"][None], [t]), "max_softmax")[0]
        np.testing.assert_allclose(o["score"], want, atol=1e-6, err_msg=f"exit {k}")
    res = CliRunner().invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7", "--no-temperature"])
    assert res.exit_code == 0 and json.loads((run / "calibration.json").read_text())["temperatures"] is None
