"""Data-parallel training under torchrun: two gloo processes on CPU give the weights of one process on the same
global batches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from edgeexit.cli import app
from edgeexit.train.checkpoint import load_checkpoint
from edgeexit.train.distributed import DistContext, loss_scale, shard_slice

# Two steps of a global batch of 25 (shards of 13 and 12, so the uneven-shard loss scaling is exercised), the
# budget method with a gater step at every step (two optimizers, two DDP modules), BatchNorm frozen.
ARGS = ["--dataset", "synthetic", "--backbone", "tiny_cnn", "--image-size", "16", "--limit-train", "50",
        "--limit-val", "20", "--limit-test", "8", "--batch-size", "25", "--epochs", "1", "--max-steps", "2",
        "--method", "budget", "--gater-period", "1", "--lr", "1e-3", "--device", "cpu", "--freeze-bn"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shards_cover_the_batch_and_scale_to_its_mean():
    for n in (1, 2, 7, 25, 64):
        for world in (1, 2, 3):
            parts = [shard_slice(n, DistContext(rank=r, world_size=world)) for r in range(world)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1
            # DDP averages over the ranks: (1/W)·Σ scale_r·n_r·mean_r = the mean over the n samples
            assert sum(loss_scale(s, n, DistContext(world_size=world)) for s in sizes) / world == pytest.approx(1.0)


def test_two_processes_train_like_one(tmp_path):
    """`torchrun --nproc_per_node 2 -m edgeexit train` == `edgeexit train` in one process, after two steps.

    BatchNorm choice: with DDP each rank normalises with its shard's batch statistics, which differ from the
    whole batch's, so plain training-mode BN cannot match one process; SyncBatchNorm would, but it only runs on
    CUDA. The run uses --freeze-bn (BN in eval mode: running statistics, the same per-sample function on any
    split of the batch), so the two runs must agree up to float summation order. Weights are compared, and so is
    Adam's first moment, which is 0.1·gradient after the first step and would show a wrongly scaled gradient
    (Adam's update itself is nearly scale-free).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "edgeexit", "train", "--run-dir", str(tmp_path / "two"), *ARGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("checkpoint:") == 1  # rank 0 alone reports (and writes)

    res = CliRunner().invoke(app, ["train", "--run-dir", str(tmp_path / "one"), *ARGS])
    assert res.exit_code == 0, res.output
    one, two = load_checkpoint(tmp_path / "one" / "checkpoint.pt"), load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["global_step"] == two["global_step"] == 2
    w1, w2 = one["last_state_dict"], two["last_state_dict"]
    assert w1.keys() == w2.keys() and any(k.startswith("gater.") for k in w1)
    moved = max(float((w1[k].float() - build_init(k)).abs().max()) for k in ("segments.0.0.0.weight",))
    assert moved > 1e-4  # the step did change the weights
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-6, rtol=0)
    for opt in ("optimizer", "gater_optimizer"):
        for i, s1 in one[opt]["state"].items():
            s2 = two[opt]["state"][i]
            torch.testing.assert_close(s2["exp_avg"], s1["exp_avg"], atol=1e-8, rtol=1e-5)
    for key in ("train_loss", "val_loss", "val_exit_accuracy", "train_exit_accuracy"):
        assert two["history"][0][key] == pytest.approx(one["history"][0][key], rel=1e-6, abs=1e-7)


def build_init(key: str) -> torch.Tensor:
    """The tiny model's initial value of `key` (train_stage seeds with --seed 0 before building it)."""
    from edgeexit.models import ModelConfig, build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig(backbone="tiny_cnn", in_channels=3, image_size=16,
                                  gater_features=("confidence", "entropy")))
    return net.state_dict()[key]
