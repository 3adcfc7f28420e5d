"""The early-exit loop on real onnxruntime: batch-size invariance, compaction, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeexit.calibrate.scores import score_fn_torch
from edgeexit.errors import ShapeError
from edgeexit.runtime import EarlyExitRuntime


def _inputs(n: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 16, 16)).astype(np.float32)


def test_batch_sizes_give_identical_answers(tiny_runtime):
    x = _inputs(64)
    whole = tiny_runtime.run(x)
    assert len(set(whole.exit_index.tolist())) == 3, "the fixture's thresholds should spread samples over all exits"
    for batch in (1, 7, 64):
        parts = [tiny_runtime.run(x[i:i + batch]) for i in range(0, 64, batch)]
        np.testing.assert_array_equal(np.concatenate([p.predictions for p in parts]), whole.predictions)
        np.testing.assert_array_equal(np.concatenate([p.exit_index for p in parts]), whole.exit_index)
        np.testing.assert_allclose(np.concatenate([p.logits for p in parts]), whole.logits, atol=1e-5)


def test_onnxruntime_matches_torch_reference(tiny_net, tiny_runtime):
    """Same thresholds, torch backend vs onnxruntime: the same exit decisions and predictions."""
    score = score_fn_torch("max_softmax")
    ref = EarlyExitRuntime.from_net(tiny_net, score, tiny_runtime.thresholds, tiny_runtime.cumulative_macs, (1, 16, 16), 5)
    x = _inputs(64, seed=3)
    a, b = ref.run(x), tiny_runtime.run(x)
    assert a.exit_histogram(3) == b.exit_histogram(3) and sum(a.exit_histogram(3)) == 64
    np.testing.assert_array_equal(a.exit_index, b.exit_index)
    np.testing.assert_array_equal(a.predictions, b.predictions)


def test_exiting_samples_get_their_exit_logits(tiny_net, tiny_runtime):
    x = _inputs(32, seed=4)
    got = tiny_runtime.run(x)
    with torch.no_grad():
        per_exit = [l.numpy() for l in tiny_net(torch.from_numpy(x))]
    for i, k in enumerate(got.exit_index):
        np.testing.assert_allclose(got.logits[i], per_exit[k][i], atol=1e-4, rtol=1e-4)
        # exit rule: the first exit whose score reaches its threshold
        scores = [float(torch.softmax(torch.from_numpy(per_exit[j][i]), 0).max()) for j in range(3)]
        first = next(j for j in range(3) if j == 2 or scores[j] >= tiny_runtime.thresholds[j])
        assert k == first
    np.testing.assert_array_equal(got.macs, tiny_runtime.cumulative_macs[got.exit_index])


@pytest.mark.parametrize("bad, what", [
    (np.zeros((2, 1, 16, 16), np.float64), "dtype"),
    (np.zeros((2, 3, 16, 16), np.float32), "shape"),
    (np.zeros((0, 1, 16, 16), np.float32), "shape"),
    (np.full((2, 1, 16, 16), np.nan, np.float32), "NaN"),
    ([[0.0]], "numpy"),
])
def test_bad_input_is_refused_clearly(tiny_runtime, bad, what):
    with pytest.raises(ShapeError) as err:
        tiny_runtime.run(bad)
    assert what in str(err.value) and "hint" in str(err.value)


def test_final_exit_always_answers(tiny_runtime):
    rt = tiny_runtime.with_thresholds([math.inf, math.inf, math.inf])  # even a +inf final threshold is ignored
    assert (rt.run(_inputs(5)).exit_index == 2).all()
