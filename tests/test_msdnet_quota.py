"""The fractions policy's `quota="msdnet"` rule against MSDNet's reference code.

Reference: kalviny/MSDNet-PyTorch, adaptive_inference.py, `Tester.dynamic_eval_find_threshold` (the code of
Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification", ICLR 2018), transcribed
literally below (`reference_find_threshold`), torch and all, so that its float32 arithmetic is the reference's.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.calibration import CalibrationWarning
from edgeexit.calibrate.policies import _msdnet_thresholds, calibrate_fractions
from edgeexit.errors import ConfigError


def reference_find_threshold(logits, targets, p, flops):
    """`Tester.dynamic_eval_find_threshold` of kalviny/MSDNet-PyTorch (adaptive_inference.py), line for line; only
    `self` is gone. `logits` [m, n, c] are the softmax outputs there; returns (acc %, expected flops, T)."""
    n_stage, n_sample, c = logits.size()

    max_preds, argmax_preds = logits.max(dim=2, keepdim=False)

    _, sorted_idx = max_preds.sort(dim=1, descending=True)

    filtered = torch.zeros(n_sample)
    T = torch.Tensor(n_stage).fill_(1e8)

    for k in range(n_stage - 1):
        acc, count = 0.0, 0
        out_n = math.floor(n_sample * p[k])
        for i in range(n_sample):
            ori_idx = sorted_idx[k][i]
            if filtered[ori_idx] == 0:
                count += 1
                if count == out_n:
                    T[k] = max_preds[k][ori_idx]
                    break
        filtered.add_(max_preds[k].ge(T[k]).type_as(filtered))

    T[n_stage - 1] = -1e8  # accept all of the samples at the last stage

    acc_rec, exp = torch.zeros(n_stage), torch.zeros(n_stage)
    acc, expected_flops = 0, 0
    for i in range(n_sample):
        gold_label = targets[i]
        for k in range(n_stage):
            if max_preds[k][i].item() >= T[k]:  # force the sample to exit at k
                if int(gold_label.item()) == int(argmax_preds[k][i].item()):
                    acc += 1
                    acc_rec[k] += 1
                exp[k] += 1
                break
    acc_all = 0
    for k in range(n_stage):
        _t = 1.0 * exp[k] / n_sample
        expected_flops += _t * flops[k]
        acc_all += acc_rec[k]

    return acc * 100.0 / n_sample, expected_flops, T


def run_reference(scores: np.ndarray, q, labels=None, probs=None, costs=None):
    """The reference on `scores` [E, N] (as its max softmax) and fractions q; returns (T as edgeexit writes
    thresholds: 1e8 -> +inf, -1e8 -> -inf, acc %, expected cost)."""
    n_exits, n = scores.shape
    logits = torch.from_numpy(np.asarray(scores if probs is None else probs, dtype=np.float32))
    if probs is None:
        logits = logits[:, :, None]  # one class: its max over classes is the score itself
    targets = torch.Tensor(n).copy_(torch.from_numpy(np.zeros(n) if labels is None else np.asarray(labels)))
    flops = torch.from_numpy(np.arange(1.0, n_exits + 1) if costs is None else np.asarray(costs, dtype=np.float64))
    acc, expected, T = reference_find_threshold(logits, targets, torch.FloatTensor([float(v) for v in q]),
                                                flops)
    t = [math.inf if v == 1e8 else v for v in T.tolist()]
    t[-1] = -math.inf if t[-1] == -1e8 else t[-1]
    return t, acc, float(expected)


def f32(x: float) -> float:
    return float(np.float32(x))


# ten samples, three exits, scores read as given ("confidence"); costs [1, 2, 3] and a budget of 2 (2/3 of the
# unsplit model's 3) make q = [1/3, 1/3, 1/3]: floor(10/3) = 3 samples at exits 0 and 1, 4 at the final exit
S0 = [0.10, 0.95, 0.40, 0.80, 0.20, 0.70, 0.30, 0.60, 0.50, 0.90]
S1 = [0.55, 0.99, 0.65, 0.98, 0.85, 0.15, 0.75, 0.25, 0.45, 0.97]
S2 = [0.5] * 10
COSTS = np.array([1.0, 2.0, 3.0])
THIRDS = Budget("macs_fraction", 2.0 / 3.0)


def run(scores, budget=THIRDS, quota="msdnet", n_classes=3, seed=0):
    scores = np.asarray(scores, dtype=np.float32)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(*scores.shape, n_classes)).astype(np.float32)
    labels = rng.integers(0, n_classes, scores.shape[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cal = calibrate_fractions(logits, labels, COSTS, budget, reference_cost=3.0, kind="confidence",
                                  confidences=scores, quota=quota)
    return cal, [str(w.message) for w in caught if issubclass(w.category, CalibrationWarning)]


def test_hand_computed_floored_quotas():
    cal, _ = run([S0, S1, S2])
    assert cal.target_fractions == pytest.approx([1 / 3] * 3, abs=1e-9)
    # exit 0: descending 0.95 (s1), 0.90 (s9), 0.80 (s3) -> the 3rd: T0 = 0.80; samples 1, 9, 3 leave.
    # exit 1: the three highest scores (0.99, 0.98, 0.97) belong to samples that left: the reference skips them
    # (filtered) and walks on: 0.85 (s4), 0.75 (s6), 0.65 (s2) -> T1 = 0.65. Final exit: samples 0, 5, 7, 8.
    assert cal.thresholds == [f32(0.80), f32(0.65), -math.inf]
    assert cal.exit_fractions == [0.3, 0.3, 0.4]
    assert cal.policy_params["quota"] == "msdnet"
    assert run_reference(np.array([S0, S1, S2]), cal.target_fractions)[0] == cal.thresholds
    # the default rule rounds the running total instead: round(10/3) = 3, round(20/3) = 7 -> exit 1 takes 4
    rounded, _ = run([S0, S1, S2], quota="rounded")
    assert rounded.thresholds == [f32(0.80), f32(0.55), -math.inf]
    assert rounded.exit_fractions == [0.3, 0.4, 0.3]
    assert rounded.policy_params["quota"] == "rounded"


def test_a_tie_straddling_the_quota_lets_the_whole_tie_leave_and_the_next_quota_stays():
    s0 = [0.9, 0.8, 0.7, 0.7, 0.7, 0.2, 0.3, 0.1, 0.4, 0.6]  # the quota of 3 ends inside the tie at 0.7
    s1 = [0.9, 0.9, 0.9, 0.9, 0.9, 0.5, 0.8, 0.6, 0.7, 0.1]
    cal, notes = run([s0, s1, S2])
    # exit 0: 0.9, 0.8, 0.7 -> T0 = 0.7, and >= lets all three 0.7s leave: 5 samples (0-4) where 3 were planned.
    # exit 1: its quota is still floor(10/3) = 3 among samples 5-9: 0.8 (s6), 0.7 (s8), 0.6 (s7) -> T1 = 0.6.
    assert cal.thresholds == [f32(0.7), f32(0.6), -math.inf]
    assert cal.exit_fractions == [0.5, 0.3, 0.2]
    assert any("tied scores let 5 samples leave where the quota was 3" in n for n in notes)
    assert run_reference(np.array([s0, s1, S2]), cal.target_fractions)[0] == cal.thresholds
    # the rounded rule makes exit 1 take fewer to compensate: 7 - 5 = 2 -> T1 = 0.7
    rounded, _ = run([s0, s1, S2], quota="rounded")
    assert rounded.thresholds == [f32(0.7), f32(0.7), -math.inf]
    assert rounded.exit_fractions == [0.5, 0.2, 0.3]


def test_a_tie_that_leaves_fewer_samples_than_the_next_quota_empties_that_exit():
    s0 = [0.5] * 8 + [0.1, 0.2]  # exit 0's quota of 3 ends in a tie of 8
    s1 = [0.9] * 8 + [0.8, 0.7]
    cal, notes = run([s0, s1, S2])
    # exit 1: quota 3, only 2 samples still running: the reference's count never reaches 3, T1 stays 1e8
    assert cal.thresholds == [f32(0.5), math.inf, -math.inf]
    assert cal.exit_fractions == [0.8, 0.0, 0.2]
    assert any("quota of 3 samples exceeds the 2 still running" in n for n in notes)
    assert run_reference(np.array([s0, s1, S2]), cal.target_fractions)[0] == cal.thresholds


def test_nobody_exits_where_the_floored_quota_is_zero():
    # a budget of 2.9 of 3: q ~ [0.0078, 0.084, 0.91]; floor(10 q_k) = 0 at exits 0 and 1
    cal, notes = run([S0, S1, S2], budget=Budget("macs_fraction", 2.9 / 3.0))
    q = np.array(cal.target_fractions)
    assert (q[:2] > 0).all() and (np.floor(10 * q[:2]) == 0).all()
    # the reference leaves T at 1e8 (above every score); edgeexit writes +inf (null in a bundle's manifest)
    assert cal.thresholds == [math.inf, math.inf, -math.inf]
    assert cal.exit_fractions == [0.0, 0.0, 1.0]
    assert sum("= 0: nobody leaves here" in n for n in notes) == 2
    assert run_reference(np.array([S0, S1, S2]), q)[0] == cal.thresholds
    # the rounded rule sends one sample to exit 1 (round(10 (q0 + q1)) = 1)
    rounded, _ = run([S0, S1, S2], budget=Budget("macs_fraction", 2.9 / 3.0), quota="rounded")
    assert rounded.exit_fractions == [0.0, 0.1, 0.9]


def test_an_unknown_quota_rule_is_refused():
    with pytest.raises(ConfigError) as err:
        run([S0, S1, S2], quota="floor")
    assert "unknown quota rule" in str(err.value) and "rounded | msdnet" in str(err.value)


@st.composite
def problems(draw):
    n_exits = draw(st.integers(2, 5))
    n = draw(st.integers(1, 40))
    # scores on a coarse grid, so that ties are common; > 0 so that the class maximum below is unique
    grid = draw(st.sampled_from([4, 10, 1000]))
    scores = np.array(draw(st.lists(st.integers(1, grid), min_size=n_exits * n, max_size=n_exits * n)),
                      dtype=np.float32).reshape(n_exits, n) / np.float32(grid)
    weights = np.array(draw(st.lists(st.floats(0.0, 1.0), min_size=n_exits, max_size=n_exits))) + 1e-3
    return scores, weights / weights.sum(), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_the_port_matches_the_reference_loop(problem):
    scores, q, _ = problem
    thresholds, _ = _msdnet_thresholds(scores, q)
    reference = run_reference(scores, q)[0]
    assert thresholds[:-1].tolist() == reference[:-1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.floats(0.0, 1.0))
def test_the_policy_option_matches_the_reference_end_to_end(problem, position):
    scores, _, seed = problem
    n_exits, n = scores.shape
    rng = np.random.default_rng(seed)
    # softmax-like outputs whose maximum is the score, at a random class (the reference's argmax is the prediction)
    n_classes = 4
    probs = rng.uniform(0.0, 0.45, size=(n_exits, n, n_classes)).astype(np.float32) * scores[:, :, None]
    top = rng.integers(0, n_classes, size=(n_exits, n))
    np.put_along_axis(probs, top[:, :, None], scores[:, :, None], axis=2)
    labels = rng.integers(0, n_classes, n)
    costs = np.cumsum(rng.uniform(0.5, 2.0, n_exits))
    budget = Budget("macs_fraction", float(costs[0] + position * (costs[-1] - costs[0])) / float(costs[-1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        cal = calibrate_fractions(probs, labels, costs, budget, reference_cost=float(costs[-1]), kind="confidence",
                                  confidences=scores, quota="msdnet")
    t, acc, expected = run_reference(scores, cal.target_fractions, labels=labels, probs=probs, costs=costs)
    assert cal.thresholds == t
    assert cal.accuracy * 100.0 == pytest.approx(acc, abs=1e-9)
    assert cal.mean_cost == pytest.approx(expected, rel=1e-5)


def test_the_cli_reaches_the_option_and_refuses_it_for_other_policies(tmp_path):
    """`edgeexit calibrate --policy fractions --quota msdnet` on a tiny trained run; --quota with another policy,
    or an unknown rule, exits 2 with the message and leaves the earlier calibration.json as it was."""
    import json

    from typer.testing import CliRunner

    from edgeexit.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["train", "--run-dir", str(run), "--epochs", "1", "--dataset", "synthetic", "--backbone",
                              "tiny_cnn", "--limit-train", "64", "--limit-val", "64", "--limit-test", "32",
                              "--image-size", "16"])
    assert res.exit_code == 0, res.output
    base = ["calibrate", "--run-dir", str(run), "--budget", "0.6"]
    res = runner.invoke(app, [*base, "--policy", "fractions", "--quota", "msdnet", "--no-temperature"])
    assert res.exit_code == 0, res.output
    written = (run / "calibration.json").read_bytes()
    cal = json.loads(written)
    assert cal["policy"] == "fractions" and cal["policy_params"]["quota"] == "msdnet"
    # continuous softmax scores do not tie: every exit but the last takes exactly its floored quota
    n, q = cal["n_samples"], np.array(cal["target_fractions"], dtype=np.float32)
    counts = np.rint(n * np.array(cal["exit_fractions"])).astype(int)
    assert counts[:-1].tolist() == np.floor(np.float32(n) * q[:-1]).astype(int).tolist()
    assert counts[-1] == n - counts[:-1].sum()
    for extra, message in ((["--policy", "search", "--quota", "msdnet"], "applies to the fractions policy only"),
                           (["--policy", "fractions", "--quota", "floor"], "unknown quota rule")):
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output
        assert (run / "calibration.json").read_bytes() == written
