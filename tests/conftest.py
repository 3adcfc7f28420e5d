"""Shared fixtures: tiny models exported once per session, on real onnxruntime."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeexit.export import LOWERINGS, split_programs
from edgeexit.models import ModelConfig, build_model
from edgeexit.models.costs import count_costs
from edgeexit.models.scores import score_fn_torch
from edgeexit.runtime import EarlyExitRuntime, make_backend

torch.set_num_threads(1)  # tests run in parallel workers; keep each on one core


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip cleanly on machines without a CUDA device (CI, laptops)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def runtime_for(net, shape, out_dir: Path, thresholds, score: str = "max_softmax", *, backend: str = "onnxruntime",
                max_batch: int = 64) -> EarlyExitRuntime:
    """Split `net`, lower its segments for `backend`'s format and load them into the early-exit runtime."""
    import importlib

    programs, _ = split_programs(net, score_fn_torch(score), shape, max_batch=max_batch)
    be = make_backend(backend, threads=1)
    refs = importlib.import_module(LOWERINGS[be.format]).lower_programs(programs, Path(out_dir))
    segments = [be.open_segment(Path(out_dir) / refs[p.name].file, refs[p.name], p.inputs, p.outputs, max_batch)
                for p in programs]
    costs = count_costs(net, shape[0], shape[1]).cumulative_macs
    return EarlyExitRuntime(be, segments, thresholds, costs, shape, programs[-1].outputs[0].shape[1], max_batch)


QUICK = ["--dataset", "synthetic", "--backbone", "tiny_cnn", "--limit-train", "256", "--limit-val", "128",
         "--limit-test", "128", "--image-size", "16"]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """One `edgeexit build` of a tiny model on synthetic data: (run directory, what it printed)."""
    from typer.testing import CliRunner

    from edgeexit.cli import app

    run = tmp_path_factory.mktemp("run")
    res = CliRunner().invoke(app, ["build", "--run-dir", str(run), "--epochs", "2", "--budget", "0.7", *QUICK])
    assert res.exit_code == 0, res.output
    return run, res.output


def copy_run(built, dest: Path, names=("checkpoint.pt",)) -> Path:
    """A fresh run directory holding copies of some of the built run's artifacts."""
    import shutil

    run, _ = built
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(run / name, dest / name)
    return dest


def copy_bundle(built, tmp_path: Path) -> Path:
    """A copy of the built bundle (its files, not the link) at tmp_path/bundle, to damage."""
    import shutil

    run, _ = built
    return Path(shutil.copytree(run / "bundle", tmp_path / "bundle"))


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


# The tiny build exported for target android, shared by the C++ runner and the JVM tests.
@pytest.fixture(scope="session")
def android_bundle(built, tmp_path_factory) -> Path:
    from test_cpp_runner import export_android

    run, _ = built
    return export_android(run, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def inputs(android_bundle) -> np.ndarray:
    from test_cpp_runner import sample_inputs

    return sample_inputs(android_bundle)


@pytest.fixture(scope="session")
def spread_bundle(android_bundle, inputs, tmp_path_factory) -> Path:
    """The android bundle with thresholds between neighbouring scores, so that every exit answers some inputs."""
    from test_cpp_runner import spread_thresholds

    return spread_thresholds(android_bundle, inputs, tmp_path_factory.mktemp("spread") / "bundle")
