"""Shared fixtures: tiny models exported once per session, on real onnxruntime."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeexit.calibrate.scores import score_fn_torch
from edgeexit.costs import count_costs
from edgeexit.export import export_segments, segment_output_shapes
from edgeexit.models import ModelConfig, build_model
from edgeexit.runtime import EarlyExitRuntime, OrtSegment

torch.set_num_threads(1)  # tests run in parallel workers; keep each on one core


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly on machines without a CUDA device (CI, laptops)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def runtime_for(net, shape, out_dir: Path, thresholds, score: str = "max_softmax") -> EarlyExitRuntime:
    """Export `net`'s segments to ONNX and load them into the onnxruntime early-exit runtime."""
    score_fn = score_fn_torch(score)
    paths = export_segments(net, score_fn, shape, out_dir)
    shapes = segment_output_shapes(net, score_fn, shape)
    costs = count_costs(net, shape[0], shape[1]).cumulative_macs
    return EarlyExitRuntime([OrtSegment(p, s, threads=1) for p, s in zip(paths, shapes)], thresholds, costs, shape,
                            shapes[-1][0][0])


@pytest.fixture(scope="session")
def tiny_net():
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="tiny_cnn", in_channels=1, image_size=16, num_classes=5)).eval()


@pytest.fixture(scope="session")
def tiny_runtime(tiny_net, tmp_path_factory):
    """Thresholds chosen so that a random batch spreads over all three exits."""
    out = tmp_path_factory.mktemp("tiny_segments")
    rt = runtime_for(tiny_net, (1, 16, 16), out, [math.inf] * 3)
    x = np.random.default_rng(0).standard_normal((256, 1, 16, 16)).astype(np.float32)
    with torch.no_grad():
        logits = tiny_net(torch.from_numpy(x))
    scores = [torch.softmax(l, 1).amax(1).numpy() for l in logits]
    thresholds = [float(np.quantile(scores[0], 0.6)), float(np.quantile(scores[1], 0.5)), -math.inf]
    return rt.with_thresholds(thresholds)
