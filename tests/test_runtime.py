"""The early-exit loop on real onnxruntime: batch-size invariance, compaction, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import runtime_for

from edgeexit.errors import ShapeError


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


def test_onnxruntime_matches_torch_backend(tiny_net, tiny_runtime, tmp_path):
    """Same thresholds, the torch backend on the .pt2 programs vs onnxruntime: the same exit decisions and predictions."""
    ref = runtime_for(tiny_net, (1, 16, 16), tmp_path, tiny_runtime.thresholds, backend="torch")
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
    rt = tiny_runtime.with_thresholds([math.inf, None, math.inf])  # even a +inf final threshold is ignored
    assert (rt.run(_inputs(5)).exit_index == 2).all()


def test_batches_above_the_largest_are_run_in_chunks(tiny_net, tmp_path):
    """A batch larger than the bundle's largest is split: the answers are those of small batches."""
    rt = runtime_for(tiny_net, (1, 16, 16), tmp_path, [0.3, 0.3, None], max_batch=4)
    x = _inputs(11, seed=6)
    whole = rt.run(x)
    one_by_one = [rt.run(x[i:i + 1]) for i in range(11)]
    np.testing.assert_array_equal(whole.exit_index, np.concatenate([r.exit_index for r in one_by_one]))
    np.testing.assert_allclose(whole.logits, np.concatenate([r.logits for r in one_by_one]), atol=1e-5)
