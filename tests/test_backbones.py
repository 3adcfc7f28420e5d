"""Every backbone builds, splits, exports to ONNX and matches torch; the split model is the original model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeexit.errors import ConfigError
from edgeexit.models import (
    ModelConfig,
    backbone,
    build_model,
    exit_blocks,
    list_backbones,
)
from edgeexit.models.costs import count_costs
from tests.conftest import runtime_for

SMALL = {"image_size": 32, "in_channels": 1, "num_classes": 10}


@pytest.mark.parametrize("name", list_backbones())
def test_backbone_splits_exports_and_matches_torch(name, tmp_path):
    torch.manual_seed(0)
    net = build_model(ModelConfig(backbone=name, **SMALL)).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        outs = net(x)
        full = net.unsplit()(x)
    assert len(outs) == net.num_exits >= 3
    assert all(o.shape == (3, 10) for o in outs)
    # the last exit of the split network is exactly the unsplit model
    torch.testing.assert_close(outs[-1], full, rtol=0, atol=0)

    # export with real onnxruntime (export_segments itself checks ORT vs torch at 1e-4 on batches 1 and 3)
    never = [math.inf] * net.num_exits
    rt = runtime_for(net, (1, 32, 32), tmp_path, never)
    forced = rt.run(x.numpy())
    np.testing.assert_allclose(forced.logits, full.numpy(), atol=1e-4, rtol=1e-4)
    assert (forced.exit_index == net.num_exits - 1).all()

    costs = count_costs(net, 1, 32)
    assert all(m > 0 for m in costs.segment_macs)
    assert costs.cumulative_macs == sorted(costs.cumulative_macs)
    assert costs.full_macs == sum(costs.segment_macs) + costs.head_macs[-1]


def test_every_exit_runs_on_real_runtime_and_matches_torch(tiny_net, tmp_path):
    """Each exit, forced in turn, returns that exit's torch logits."""
    x = np.random.default_rng(1).standard_normal((7, 1, 16, 16)).astype(np.float32)
    rt = runtime_for(tiny_net, (1, 16, 16), tmp_path, [math.inf] * 3)
    with torch.no_grad():
        want = tiny_net(torch.from_numpy(x))
    for k in range(3):
        thresholds = [math.inf] * 3
        thresholds[k] = -math.inf
        got = rt.with_thresholds(thresholds).run(x)
        assert (got.exit_index == k).all()
        np.testing.assert_allclose(got.logits, want[k].numpy(), atol=1e-4, rtol=1e-4)
        assert (got.macs == rt.cumulative_macs[k]).all()


def test_placements():
    bb = backbone("resnet18", num_classes=10, in_channels=1)
    assert [bb.block_names[i] for i in exit_blocks(bb, "stages")] == ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert exit_blocks(bb, "blocks") == list(range(len(bb.blocks)))
    assert exit_blocks(bb, [2, 4]) == [2, 4, len(bb.blocks) - 1]
    mb = backbone("mobilenet_v3_small", num_classes=10, in_channels=3)
    assert len(exit_blocks(mb, "full")) == 5  # AEP's MobileNetV3-Small "full" variant
    eb = backbone("efficientnet_b0", num_classes=10, in_channels=3)
    assert len(exit_blocks(eb, "full")) == 7  # AEP's EfficientNet "full": one exit per MBConv stage


def test_more_sizes_by_name():
    assert backbone("efficientnet_b1", num_classes=10, in_channels=1).name == "efficientnet_b1"
    assert len(backbone("cifar_resnet32", num_classes=10, in_channels=3).blocks) == 16


@pytest.mark.parametrize("bad", [{"backbone": "resnet19"}, {"exits": "sometimes"}, {"exits": [99]}, {"head": "x"},
                                 {"backbone": "cifar_resnet21"}])
def test_bad_model_config_is_a_clear_error(bad):
    with pytest.raises(ConfigError) as err:
        build_model(ModelConfig(**{**SMALL, "backbone": "tiny_cnn", **bad}))
    assert "expected" in str(err.value)


def test_backbones_command_builds_no_model_and_lists_vits_with_macs():
    """`edgeexit backbones` reads the measured table: torch is never imported (so no model is built), every adapter
    and every vision transformer is listed with its MACs and parameters."""
    import subprocess
    import sys

    code = ("import sys\nfrom edgeexit.cli import app\n"
            "try:\n    app(['backbones'])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-TORCH")
    lines = out.stdout.splitlines()
    for name in [*list_backbones(), "vit_b_16", "vit_h_14"]:
        assert any(line.startswith(f"│ {name} ") for line in lines), name
    resnet18 = next(line for line in lines if line.startswith("│ resnet18 "))
    assert "1.81 G" in resnet18 and "11.7 M" in resnet18  # torchvision's figures for ResNet-18 at 224 px


def test_backbone_catalog_is_complete_and_matches_real_models():
    """The table lists every backbone, and its figures are what a real (not meta-device) model counts."""
    from edgeexit.models.catalog import catalog, catalog_names, measure

    rows = {r.name: r for r in catalog()}
    assert list(rows) == catalog_names()  # regenerate with `python -m edgeexit.models.catalog`
    for name in ("cifar_resnet20", "resnet18"):
        assert measure(name, meta=False) == rows[name], name


def test_conv_heads_are_msdnets_classifier_and_export(tmp_path):
    """--head conv: MSDNet's classifier (two 3x3 stride-2 conv-BN-ReLU, C/2 channels, average pooling, a linear
    layer) on every early exit, its MACs counted in the exit's cost; the split network exports and each exit answers
    on onnxruntime as in torch; the final exit is still the backbone's own classifier."""
    from torch import nn

    torch.manual_seed(0)
    net = build_model(ModelConfig(backbone="resnet18", head="conv", **SMALL)).eval()
    aep = build_model(ModelConfig(backbone="resnet18", head="aep", **SMALL)).eval()
    head = net.heads[0]
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == \
        [(64, 32, (3, 3), (2, 2)), (32, 32, (3, 3), (2, 2))]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in head.modules()) == 2
    assert isinstance(head[-1], nn.Linear) and head[-1].in_features == 32
    assert net.heads[1][0].out_channels == 64  # half of layer2's 128 channels
    assert type(net.heads[-1]) is type(aep.heads[-1])  # the final classifier is the backbone's
    conv_costs, aep_costs = count_costs(net, 1, 32), count_costs(aep, 1, 32)
    # layer1's maps are 64 x 8 x 8: 64*32*9*4*4 + 32*32*9*2*2 + 32*10 MACs (BatchNorm and pooling aside)
    assert conv_costs.head_macs[0] >= 64 * 32 * 9 * 16 + 32 * 32 * 9 * 4 + 320 > 100 * aep_costs.head_macs[0]
    assert conv_costs.head_macs[0] < 0.01 * conv_costs.full_macs  # under 1 % of the network
    assert conv_costs.full_macs == aep_costs.full_macs  # the unsplit model is the same network
    x = np.random.default_rng(2).standard_normal((3, 1, 32, 32)).astype(np.float32)
    rt = runtime_for(net, (1, 32, 32), tmp_path, [math.inf] * net.num_exits)
    with torch.no_grad():
        want = net(torch.from_numpy(x))
    for k in range(net.num_exits):
        thresholds = [math.inf] * net.num_exits
        thresholds[k] = -math.inf
        np.testing.assert_allclose(rt.with_thresholds(thresholds).run(x).logits, want[k].numpy(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="feature maps"):
        from edgeexit.models.conv_heads import msdnet_head

        msdnet_head((64,), 10)
