"""Bring your own model: a model defined here goes through every stage by module path; --freeze-backbone keeps its
answers bit for bit (torch) and within 1e-5 (onnxruntime); a skip connection across a split point is refused by name;
weights files load without unpickling code; stages run alone rebuild the user's model only from --model passed again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle
from edgeexit.cli import app
from edgeexit.errors import CheckpointError, ConfigError
from edgeexit.models import ModelConfig, build_model
from edgeexit.models.user import PassedModel, SplitError
from edgeexit.models.weights import read_weights
from edgeexit.pipeline import DataConfig
from edgeexit.runtime import EarlyExitRuntime
from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint

runner = CliRunner()
SPEC = "test_own_model:build_net"
DATA = ["--dataset", "synthetic", "--image-size", "16", "--limit-train", "192", "--limit-val", "96",
        "--limit-test", "96", "--batch-size", "32", "--device", "cpu"]
USER = ["--model", SPEC, "--model-kwargs", '{"num_classes": 10, "width": 6}', "--exits", "stem,block1"]
AGAIN = PassedModel(SPEC)  # the --model a later stage is given again (edgeexit never calls a spec read from a file)


class Net(nn.Module):
    """A user's classifier: not an nn.Sequential, with dropout and BatchNorm, and a residual block."""

    def __init__(self, num_classes: int = 10, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = Residual(width)
        self.block2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width),
                                    nn.ReLU())
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.fc(self.drop(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))


class Residual(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.bn(self.conv1(x)))))


def build_net(num_classes: int = 10, width: int = 8) -> nn.Module:
    return Net(num_classes, width)


def trained_user_model(tmp_path, kind: str = "state_dict") -> tuple[nn.Module, str]:
    """The user's own model after a few steps of plain training (BatchNorm statistics moved), saved as `kind`."""
    torch.manual_seed(3)
    model = build_net(10, 6)
    splits = DataConfig("synthetic", 16, 0, None, 192, 96, 96).load()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for i in range(6):
        x, y = splits.train.images[32 * i:32 * (i + 1)], splits.train.labels[32 * i:32 * (i + 1)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    path = tmp_path / f"user_{kind}.pt"
    if kind == "state_dict":
        torch.save(model.state_dict(), path)
    elif kind == "torchscript":
        torch.jit.script(model).save(str(path))
    elif kind == "export":
        torch.export.save(torch.export.export(model, (torch.randn(2, 3, 16, 16),)), str(path))
    else:
        torch.save(model, path)  # a whole pickled model
    return model, str(path)


def _ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


def test_user_model_goes_build_eval_compare(tmp_path):
    run = tmp_path / "run"
    out = _ok(["build", "--run-dir", str(run), *USER, *DATA, "--epochs", "1", "--budget", "0.8",
               "--eval-batch-size", "16"])
    assert "early exit" in out
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["model_config"]["model"] == SPEC and ckpt["model_config"]["exits"] == ["stem", "block1"]
    bundle = load_bundle(run / "bundle")
    assert [e.name for e in bundle.exits][-1] == "output" and bundle.manifest.model["model_kwargs"]["width"] == 6
    _ok(["eval", str(run / "bundle"), "--json", str(tmp_path / "e.json")])
    assert sum(json.loads((tmp_path / "e.json").read_text())["exit_histogram"]) == 96
    out = _ok(["compare", str(run / "bundle"), "--samples", "32"])
    assert "PASS" in out
    # the rebuilt network is the user's model: Net loads the segments' weights strictly and answers the same
    net, _ = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"), model=AGAIN)
    own = build_net(10, 6).eval()
    own.load_state_dict(user_weights(net), strict=True)
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.unsplit()(x), own(x))


def user_weights(net) -> dict:
    """The user's model's state_dict from the network's segments (segments.<k>.0.<module path>)."""
    return {k.split(".", 2)[2]: v for k, v in net.segments.state_dict().items()}


@pytest.mark.parametrize("kind", ["state_dict", "export"])
def test_weights_files_load_without_running_pickles(tmp_path, kind):
    model, path = trained_user_model(tmp_path, kind)
    state = read_weights(path)
    for name, value in model.state_dict().items():
        assert torch.equal(state[name], value), name


def test_a_torchscript_archive_is_refused_with_the_way_to_convert_it(tmp_path):
    """TorchScript runs its own code at load (tests/test_trust_archives.py has a hostile one); refused, with a hint."""
    _, path = trained_user_model(tmp_path, "torchscript")
    with pytest.raises(CheckpointError, match="TorchScript") as err:
        read_weights(path)
    assert "torch.save(torch.jit.load(path).state_dict()" in str(err.value)


def test_a_whole_pickled_model_is_refused_with_a_hint(tmp_path):
    _, path = trained_user_model(tmp_path, "pickle")
    with pytest.raises(CheckpointError, match="pickled") as err:
        read_weights(path)
    assert "torch.export.save" in str(err.value) and "state_dict()" in str(err.value)
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), *USER, "--weights", path, *DATA,
                              "--epochs", "1", "--freeze-backbone"])
    assert res.exit_code == 2 and "pickled" in res.output and "Traceback" not in res.output


def test_freeze_backbone_keeps_the_users_answers_bit_for_bit(tmp_path):
    model, path = trained_user_model(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = tmp_path / "run"
    _ok(["train", "--run-dir", str(run), *USER, "--weights", path, "--freeze-backbone", *DATA, "--epochs", "2",
         "--lr", "1e-2"])
    ckpt = load_checkpoint(run / "checkpoint.pt")
    net, _ = model_from_checkpoint(ckpt, model=AGAIN)
    splits = DataConfig("synthetic", 16, 0, None, 192, 96, 96).load()
    x = splits.test.images
    with torch.no_grad():
        want = model(x)
        got = net(x)
    assert torch.equal(got[-1], want)  # bit for bit on the whole test split
    # the heads did train; BatchNorm statistics and weights of the user's model did not move
    fresh = build_model(ModelConfig.from_dict({**ckpt["model_config"], "weights": None}))
    assert not torch.equal(fresh.heads[0][-1].weight, net.heads[0][-1].weight)
    inside = user_weights(net)
    assert inside.keys() == before.keys() and all(torch.equal(inside[k], v) for k, v in before.items())

    _ok(["calibrate", "--run-dir", str(run), "--budget", "0.8", "--model", SPEC])
    _ok(["export", "--run-dir", str(run), "--model", SPEC])
    rt = EarlyExitRuntime.open(load_bundle(run / "bundle"), "onnxruntime")
    forced = rt.with_thresholds([None] * rt.num_exits).run(x.numpy())
    np.testing.assert_allclose(forced.logits, want.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(rt.reference().run(x.numpy()), want.numpy(), atol=1e-5, rtol=0)
    assert (forced.predictions == want.argmax(1).numpy()).all()


@pytest.mark.parametrize("method", ["eenet", "budget"])
def test_freeze_backbone_with_the_cost_aware_methods(tmp_path, method):
    model, path = trained_user_model(tmp_path)
    run = tmp_path / "run"
    _ok(["train", "--run-dir", str(run), *USER, "--weights", path, "--freeze-backbone", "--method", method, *DATA,
         "--epochs", "1", "--max-steps", "3", "--gater-period", "1"])
    net, _ = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"), model=AGAIN)
    x = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x)[-1], model(x))


def test_unfreeze_after_trains_everything_in_the_second_stage(tmp_path):
    model, path = trained_user_model(tmp_path)
    run = tmp_path / "run"
    _ok(["train", "--run-dir", str(run), *USER, "--weights", path, "--freeze-backbone", "--unfreeze-after", "1",
         *DATA, "--epochs", "2", "--max-steps", "2", "--lr", "1e-2", "--patience", "5"])
    ckpt = load_checkpoint(run / "checkpoint.pt")
    net, _ = model_from_checkpoint({**ckpt, "state_dict": ckpt["last_state_dict"]}, model=AGAIN)
    stem = net.segments[0][0].stem[0].weight
    assert not torch.equal(stem, model.stem[0].weight)  # the backbone moved in epoch 2


def test_freeze_backbone_needs_trained_weights(tmp_path):
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path), "--backbone", "tiny_cnn", "--freeze-backbone", *DATA])
    assert res.exit_code == 2 and "needs trained weights" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path), *USER, "--unfreeze-after", "2", *DATA])
    assert res.exit_code == 2 and "--freeze-backbone" in res.output


def test_skip_connection_across_a_split_point_is_refused_by_name(tmp_path):
    cfg = ModelConfig(model=SPEC, model_kwargs={"width": 4}, exits=["block1.conv1"], in_channels=3, image_size=16)
    with pytest.raises(SplitError) as err:
        build_model(cfg)
    text = str(err.value)
    # the connection: the stem's output (before the cut) read by the residual add inside block1 (after it)
    assert "skip connection" in text and "block1.conv1" in text and "module stem" in text and "add" in text
    assert "in block1" in text
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path), "--model", SPEC, "--exits", "block1.conv1", *DATA])
    assert res.exit_code == 2 and "skip connection" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("exits, match", [(["nowhere"], "no module at this split point"),
                                          (["block1", "block1.conv1"], "inside another"),
                                          (["fc"], "the model's output"),
                                          ("stages", "name the split points")])
def test_bad_split_points_are_clear_errors(exits, match):
    with pytest.raises(ConfigError, match=match):
        build_model(ModelConfig(model=SPEC, exits=exits, in_channels=3, image_size=16))


def test_wrong_class_count_names_the_keyword():
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(ModelConfig(model=SPEC, model_kwargs={"num_classes": 7}, exits=["stem"], in_channels=3,
                                num_classes=10, image_size=16))


def test_torchvision_state_dict_of_a_grayscale_model_loads_into_the_adapter(tmp_path):
    """A user's torchvision ResNet-18 trained on 1-channel, 10-class data loads into the built-in adapter and its
    module-path twin; both answer exactly as the user's model."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    model.eval()
    path = tmp_path / "r18.pt"
    torch.save(model.state_dict(), path)
    x = torch.randn(4, 1, 32, 32)
    for cfg in (ModelConfig(backbone="resnet18", weights=str(path), in_channels=1),
                ModelConfig(model="torchvision:resnet18", model_kwargs={"num_classes": 10}, weights=str(path),
                            exits=["layer1", "layer2", "layer3"], in_channels=1)):
        net = build_model(cfg).eval()
        with torch.no_grad():
            assert torch.equal(net(x)[-1], model(x))
        assert net.num_exits == 4


def sequential_net(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))


def test_a_sequential_splits_at_its_child_indices():
    """`--exits 2,4` on an nn.Sequential names its children (module paths "2", "4"), as from_sequential does."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(model="test_own_model:sequential_net", exits=[2, 4], in_channels=3,
                                  image_size=16)).eval()
    assert net.exit_names == ["2", "4", "output"]
    own = sequential_net().eval()
    own.load_state_dict(user_weights(net), strict=True)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x)[-1], own(x))
        assert net(x)[0].shape == (3, 10)


def test_freezing_a_replaced_classifier_is_refused(tmp_path):
    """An ImageNet-shaped state_dict on 10-class data: its 1000-class classifier is replaced, and freezing the new,
    random one would fix the final exit's answers at chance."""
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "imagenet_shaped.pt")
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), "--backbone", "resnet18", "--weights",
                              str(tmp_path / "imagenet_shaped.pt"), "--freeze-backbone", *DATA, "--epochs", "1"])
    assert res.exit_code == 2 and "not in your weights file" in res.output and "Traceback" not in res.output
