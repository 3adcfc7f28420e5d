"""Training with the three papers' methods on a tiny CNN and synthetic data: determinism, exact resume, the EENet
and budget-aware objectives end to end, the gater in checkpoint and bundle, EENet exit placement by MACs."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle
from edgeexit.calibrate.budget import Budget
from edgeexit.cli import app
from edgeexit.errors import CheckpointError, ConfigError
from edgeexit.models import ModelConfig, backbone, build_model
from edgeexit.models.costs import count_costs
from edgeexit.models.gater import GaterScore, gater_score
from edgeexit.models.placement import place_exits
from edgeexit.pipeline import (
    DataConfig,
    calibrate_stage,
    export_stage,
    load_trained,
    train_stage,
)
from edgeexit.rundir import RunDir
from edgeexit.runtime import EarlyExitRuntime
from edgeexit.runtime.ort import session_options
from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint
from edgeexit.train.trainer import TrainConfig, cost_rates, evaluate, train

DATA = DataConfig("synthetic", image_size=16, limit_train=192, limit_val=64, limit_test=64)


def tiny(method: str, **model) -> ModelConfig:
    head = "pool" if method == "eenet" else "aep"
    gater = ("confidence", "margin", "entropy") if method == "budget" else None
    return ModelConfig(backbone="tiny_cnn", head=head, gater_features=gater, gater_hidden=16, **model)


def run(tmp_path, method: str, *, resume: bool = False, stop_after_epochs: int | None = None, **options) -> tuple:
    """Train the tiny model as `edgeexit train` does (train_stage), or stopped early to be resumed."""
    cfg = TrainConfig(method=method, **{"lr": 1e-3, "batch_size": 32, "device": "cpu", "gater_period": 3, **options})
    if stop_after_epochs is None:
        result = train_stage(RunDir(tmp_path), DATA, tiny(method), cfg, resume=resume, progress=False)
    else:
        splits = DATA.load()
        model = ModelConfig.from_dict({**tiny(method).to_dict(), "in_channels": 3, "image_size": 16})
        torch.manual_seed(cfg.seed)
        result = train(build_model(model), model, splits.train, splits.val, splits.spec, asdict(DATA), cfg,
                       tmp_path / "checkpoint.pt", resume=resume, progress=False, stop_after_epochs=stop_after_epochs)
    return result, load_checkpoint(tmp_path / "checkpoint.pt")


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["aep", "eenet", "budget"])
def test_same_seed_gives_identical_weights(method, tmp_path):
    first = run(tmp_path / "a", method, epochs=1, max_steps_per_epoch=4)[1]["last_state_dict"]
    again = run(tmp_path / "b", method, epochs=1, max_steps_per_epoch=4)[1]["last_state_dict"]
    other = run(tmp_path / "c", method, epochs=1, max_steps_per_epoch=4, seed=1)[1]["last_state_dict"]
    assert same_tensors(first, again)
    assert not same_tensors(first, other)
    assert any(k.startswith("gater.") for k in first) == (method == "budget")


@pytest.mark.parametrize("method", ["aep", "budget"])
def test_resume_gives_the_uninterrupted_run(method, tmp_path):
    """Weights, both optimizers, the gater's schedule and the gater step phase (period 3 over 4 steps an epoch)
    survive the checkpoint: 1 epoch + resume to 2 epochs = 2 epochs straight."""
    _, straight = run(tmp_path / "straight", method, epochs=2, max_steps_per_epoch=4)
    _, stopped = run(tmp_path / "split", method, epochs=2, max_steps_per_epoch=4, stop_after_epochs=1)
    assert stopped["epoch"] == 0 and not same_tensors(stopped["last_state_dict"], straight["last_state_dict"])
    _, resumed = run(tmp_path / "split", method, epochs=2, max_steps_per_epoch=4, resume=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 8 and len(resumed["history"]) == 2
    assert same_tensors(straight["last_state_dict"], resumed["last_state_dict"])
    if method == "budget":
        for i, s in straight["gater_optimizer"]["state"].items():
            assert torch.equal(s["exp_avg"], resumed["gater_optimizer"]["state"][i]["exp_avg"])
        # gater steps at global steps 0, 3, 6 of 8: the third one (index 2) on the cosine of 3 updates
        assert resumed["gater_optimizer"]["param_groups"][0]["lr"] == straight["gater_optimizer"]["param_groups"][0]["lr"]
        assert resumed["gater_optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.25)
        assert resumed["gater_optimizer"]["state"][0]["step"] == 3


def test_resume_refuses_another_method(tmp_path):
    run(tmp_path, "eenet", epochs=1, max_steps_per_epoch=1)
    with pytest.raises(CheckpointError, match="another training method"):
        train_stage(RunDir(tmp_path), DATA, tiny("eenet"), TrainConfig(method="aep", device="cpu"), resume=True, progress=False)


@pytest.mark.parametrize("method", ["eenet", "budget"])
def test_cost_aware_training_lowers_its_loss_and_round_trips(method, tmp_path):
    cfg = TrainConfig(method=method, lr=3e-3, batch_size=32, epochs=3, device="cpu", gater_period=3)
    torch.manual_seed(cfg.seed)
    splits = DATA.load()
    model = ModelConfig.from_dict({**tiny(method).to_dict(), "in_channels": 3, "image_size": 16})
    untrained = build_model(model)
    before, _ = evaluate(untrained, splits.val, cfg, cost_rates(untrained, splits.spec))
    result = train_stage(RunDir(tmp_path), DATA, tiny(method), cfg, progress=False)
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in result.history)
    assert result.best_val_loss < before
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]

    ckpt = load_checkpoint(result.checkpoint)
    net, cfg_back = model_from_checkpoint(ckpt)
    assert cfg_back.gater_features == tiny(method).gater_features and ckpt["train_config"]["method"] == method
    assert ckpt["cost_rates"] == pytest.approx(cost_rates(net, splits.spec)) and ckpt["cost_rates"][-1] >= 1.0
    x = splits.test.images[:8]
    returned = build_model(model)
    returned.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        for a, b in zip(net(x), returned.eval()(x)):
            assert torch.equal(a, b)
    if method == "budget":
        assert same_tensors(net.gater.state_dict(), {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("gater.")})


def test_budget_build_exports_gater_scored_segments_that_match_torch(tmp_path):
    """`edgeexit build --method budget`: calibration on the gater's P_k >= 0.5, segments whose score output is P_k
    (export checks ORT vs torch at 1e-4), and run-time exits equal to the torch model's P_k decisions."""
    res = CliRunner().invoke(app, ["build", "--run-dir", str(tmp_path), "--dataset", "synthetic", "--backbone", "tiny_cnn",
                                   "--image-size", "16", "--limit-train", "192", "--limit-val", "64", "--limit-test", "64",
                                   "--epochs", "2", "--method", "budget", "--gater-period", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    bundle = load_bundle(tmp_path / "bundle")
    assert [e.score for e in bundle.exits] == ["gater"] * 3 and bundle.exits[0].threshold == 0.5
    net, cfg, spec, _ = load_trained(tmp_path / "checkpoint.pt")
    assert cfg.gater_features == ("confidence", "entropy")  # papers/003's CIFAR features, set by the budget method
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((16, *spec.shape)).astype(np.float32))
    with torch.no_grad():
        logits = net(x)
        P = torch.stack([gater_score(o, net.gater) for o in logits])
    import onnxruntime as ort

    features = x.numpy()
    for k in range(net.num_exits):
        sess = ort.InferenceSession(str(bundle.path(f"onnx/seg{k}.onnx")), session_options(), providers=["CPUExecutionProvider"])
        outs = sess.run(None, {"x": features})
        np.testing.assert_allclose(outs[-1], P[k].numpy(), atol=1e-5)  # the segment's score is the gater's P_k
        np.testing.assert_allclose(outs[-2], logits[k].numpy(), atol=1e-4, rtol=1e-4)
        features = outs[0]
    got = EarlyExitRuntime.open(bundle).run(x.numpy())
    first = [next((k for k in range(net.num_exits - 1) if P[k, i] >= 0.5), net.num_exits - 1) for i in range(16)]
    assert got.exit_index.tolist() == first


def test_eenet_bundle_exits_where_h_reaches_the_threshold(tmp_path):
    """EENet inference (papers/002): exit at the first k with confidence h_k >= T (0.5 by default; here about the
    median of h_0 so that the samples spread over the exits); the final classifier has no confidence branch and answers
    everything left (its exported score is h = 1)."""
    run(tmp_path, "eenet", epochs=1, max_steps_per_epoch=3)
    net, _, spec, _ = load_trained(tmp_path / "checkpoint.pt")
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((32, *spec.shape)).astype(np.float32))
    with torch.no_grad():
        _, h = net.forward_exits(x)
    ranked = h[0].sort().values
    T = float(ranked[15] + ranked[16]) / 2  # between two samples: no decision rests on float rounding
    cal = calibrate_stage(RunDir(tmp_path), tmp_path / "checkpoint.pt", budget=None, policy="fixed",
                          score="confidence", threshold=T)
    bundle = export_stage(RunDir(tmp_path), tmp_path / "checkpoint.pt")
    assert cal.thresholds[:2] == [T] * 2 and [e.score for e in bundle.exits] == ["confidence"] * 3
    first = [next((k for k in range(2) if h[k][i] >= T), 2) for i in range(32)]
    assert len(set(first)) >= 2
    assert EarlyExitRuntime.open(load_bundle(tmp_path / "bundle")).run(x.numpy()).exit_index.tolist() == first


def test_gater_calibration_reads_the_gaters_probabilities(tmp_path):
    """calibrate_stage feeds P_k (not max softmax) to the gater policy, and searches thresholds on P_k for a budget."""
    run(tmp_path, "budget", epochs=1, max_steps_per_epoch=3)
    net, _, spec, data = load_trained(tmp_path / "checkpoint.pt")
    val = data.load(spec.channels).val
    with torch.no_grad():
        P = torch.stack([gater_score(o, net.gater) for o in net(val.images)])
    cal = calibrate_stage(RunDir(tmp_path), tmp_path / "checkpoint.pt", budget=None, policy="gater", score="gater")
    assert cal.exit_fractions[0] == pytest.approx(float((P[0] >= 0.5).float().mean()))
    searched = calibrate_stage(RunDir(tmp_path), tmp_path / "checkpoint.pt", budget=Budget("macs_fraction", 0.8),
                               policy="search", score="gater")
    assert searched.score_kind == "gater"
    run(tmp_path / "aep", "aep", epochs=1, max_steps_per_epoch=1)
    with pytest.raises(ConfigError, match="trained with a gater"):
        calibrate_stage(RunDir(tmp_path / "aep"), tmp_path / "aep" / "checkpoint.pt", budget=None, policy="gater")


def test_gater_score_module_exports_inside_a_segment(tmp_path):
    net = build_model(tiny("budget", in_channels=1, image_size=16)).eval()
    seg = net.exit_segment(0, GaterScore(net.gater))
    assert any(name.startswith("score_fn.gater.") for name, _ in seg.named_parameters())  # weights go with the graph
    features, logits, score = seg(torch.randn(2, 1, 16, 16))
    assert torch.equal(score, gater_score(logits, net.gater))


def test_methods_check_the_model_they_train(tmp_path):
    with pytest.raises(ConfigError, match="confidence branch"):
        train_stage(RunDir(tmp_path), DATA, tiny("aep"), TrainConfig(method="eenet", device="cpu"), progress=False)
    with pytest.raises(ConfigError, match="unknown training method"):
        TrainConfig(method="sgd")
    with pytest.raises(ConfigError, match="λ"):
        TrainConfig(method="eenet", lam=-1.0)
    with pytest.raises(ConfigError, match="gater_period"):
        TrainConfig(method="budget", gater_period=0)
    assert TrainConfig(method="eenet").lam == 1.0 and TrainConfig(method="budget").lam == 2.0


def block_costs(name: str, in_channels: int, size: int) -> list[int]:
    """Per-block cumulative MACs from edgeexit.models.costs on the net with an exit after every block (independent of
    build.py's counting); the last one adds the final classifier, so it is the unsplit model's MACs."""
    costs = count_costs(build_model(ModelConfig(backbone=name, in_channels=in_channels, image_size=size, exits="blocks")),
                        in_channels, size)
    cumulative = np.cumsum(costs.segment_macs).tolist()
    assert cumulative[-1] + costs.head_macs[-1] == costs.full_macs
    return cumulative[:-1] + [costs.full_macs]


@pytest.mark.parametrize("name, exits", [("cifar_resnet20", "eenet:pareto:2"), ("cifar_resnet20", "eenet:golden:3"),
                                         ("resnet18", "eenet:linear:3")])
def test_eenet_placement_follows_the_macs(name, exits):
    _, distribution, n = exits.split(":")
    macs = block_costs(name, 3, 32)
    want = place_exits(macs, int(n), distribution)
    net = build_model(ModelConfig(backbone=name, in_channels=3, image_size=32, exits=exits, head="pool"))
    bb = backbone(name, num_classes=10, in_channels=3)
    assert net.exit_names == [bb.block_names[i] for i in want] + [bb.block_names[-1]]
    if exits == "eenet:pareto:2":
        # Pareto: exits near 20 % and 36 % of the MACs (papers/002, Sec. 3.4)
        assert [macs[i] / macs[-1] for i in want] == pytest.approx([0.2, 0.36], abs=0.05)


@pytest.mark.parametrize("bad", ["eenet:zipf:2", "eenet:pareto:0", "eenet:pareto", "eenet:pareto:99"])
def test_bad_eenet_placement_is_a_clear_error(bad):
    with pytest.raises(ConfigError):
        build_model(ModelConfig(backbone="tiny_cnn", exits=bad, head="pool", image_size=16))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_precision_on_cuda(tmp_path):
    result, ckpt = run(tmp_path, "budget", epochs=1, max_steps_per_epoch=3, device="cuda")
    assert ckpt["scaler"]["scale"] > 0  # a live GradScaler (float16 autocast) was used and saved
    assert all(torch.isfinite(v.float()).all() for v in ckpt["last_state_dict"].values())
    assert all(math.isfinite(h["train_loss"]) for h in result.history)


def test_cosine_schedule_anneals_the_network_learning_rate():
    from edgeexit.train.trainer import TrainConfig, network_lr

    cfg = TrainConfig(lr=1e-3, schedule="cosine")
    assert network_lr(cfg, 0, 100) == pytest.approx(1e-3)
    assert network_lr(cfg, 50, 100) == pytest.approx(5e-4)
    assert network_lr(cfg, 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert network_lr(TrainConfig(lr=1e-3), 70, 100) == 1e-3
    with pytest.raises(ConfigError, match="schedule"):
        TrainConfig(schedule="step")
