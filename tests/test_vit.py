"""Vision transformers: exits after encoder blocks with heads on the class token; a tiny torchvision ViT splits,
exports to ONNX and .pte, and every exit matches torch; sizes by name; the CLI trains one and rebuilds it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import runtime_for
from torchvision.models.vision_transformer import VisionTransformer
from typer.testing import CliRunner

from edgeexit.cli import app
from edgeexit.errors import ConfigError
from edgeexit.models import ModelConfig, build_model
from edgeexit.models.user import ClassTokenHead
from edgeexit.models.user import PassedModel
from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint

TINY = {"image_size": 16, "patch_size": 4, "num_layers": 4, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32,
        "num_classes": 10}
SPEC = "torchvision.models:VisionTransformer"


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(model=SPEC, model_kwargs=TINY, in_channels=3, image_size=16)).eval()


def test_tiny_vit_exits_after_encoder_blocks_on_the_class_token():
    net = tiny_vit()
    assert net.exit_names == ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1",
                              "encoder.layers.encoder_layer_2", "output"]
    assert all(isinstance(h, ClassTokenHead) for h in net.heads[:-1])
    x = torch.randn(3, 3, 16, 16)
    own = VisionTransformer(**TINY).eval()
    own.load_state_dict({k.split(".", 2)[2]: v for k, v in net.segments.state_dict().items()}, strict=True)
    with torch.no_grad():
        outs = net(x)
        assert torch.equal(outs[-1], own(x))  # the final exit is the ViT itself
        # an exit head reads the class token only: changing the other tokens' features leaves it alone
        feats = net.segments[0](x)
        moved = feats.clone()
        moved[:, 1:] += 1.0
        assert torch.equal(net.heads[0](feats), net.heads[0](moved))


@pytest.mark.parametrize("backend", ["onnxruntime", "executorch"])
def test_tiny_vit_segments_export_and_match_torch(backend, tmp_path):
    net = tiny_vit()
    rt = runtime_for(net, (3, 16, 16), tmp_path, [math.inf] * net.num_exits, backend=backend, max_batch=8)
    x = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = [o.numpy() for o in net(torch.from_numpy(x))]
    for k in range(net.num_exits):
        thresholds = [math.inf] * net.num_exits
        thresholds[k] = -math.inf
        got = rt.with_thresholds(thresholds).run(x)
        assert (got.exit_index == k).all()
        np.testing.assert_allclose(got.logits, want[k], atol=1e-4, rtol=1e-4)


def test_vit_sizes_by_name():
    net = build_model(ModelConfig(backbone="vit_b_16", in_channels=1, image_size=32))
    assert net.exit_names == ["encoder.layers.encoder_layer_2", "encoder.layers.encoder_layer_5",
                              "encoder.layers.encoder_layer_8", "output"]
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 32))[-1].shape == (1, 10)
    full = build_model(ModelConfig(backbone="vit_b_32", in_channels=3, image_size=64, exits="full", num_classes=5))
    assert full.num_exits == 12  # after each of the 11 first blocks, and the final classifier
    with pytest.raises(ConfigError, match="EENet exit blocks need feature maps"):
        build_model(ModelConfig(model=SPEC, model_kwargs=TINY, in_channels=3, image_size=16, head="pool"))


def test_cli_trains_a_vit_and_rebuilds_it_from_the_checkpoint(tmp_path):
    res = CliRunner().invoke(app, [
        "train", "--run-dir", str(tmp_path), "--model", SPEC, "--model-kwargs", json.dumps(TINY),
        "--dataset", "synthetic", "--image-size", "16", "--limit-train", "64", "--limit-val", "32", "--limit-test", "32",
        "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--lr", "1e-3"])
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    net, cfg = model_from_checkpoint(ckpt, model=PassedModel(SPEC))  # a package.module:function is passed again
    assert cfg.model == SPEC and cfg.model_kwargs == TINY and net.num_exits == 4
    assert ckpt["model_config"]["exits"] == "stages"
