"""EENet exit blocks Plain / Pool / Bnpool (papers/002 Sec. 3.1, Fig. 2, Eq. 1-2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeexit.errors import ConfigError, ShapeError
from edgeexit.models.eenet_heads import BnpoolExit, PlainExit, PoolExit, make_exit_block
from edgeexit.models.net import EarlyExitNet
from edgeexit.train.losses import eenet_loss

C_IN, CLASSES = 4, 3


def build(kind: str, size: int) -> nn.Module:
    if kind == "plain_sized":
        return make_exit_block("plain", C_IN, CLASSES, spatial_size=size)
    return make_exit_block(kind, C_IN, CLASSES)


@pytest.mark.parametrize("size", [1, 8])
@pytest.mark.parametrize("kind", ["plain", "plain_sized", "pool", "bnpool"])
def test_exit_block_shapes_range_and_gradients(kind, size):
    torch.manual_seed(0)
    head = build(kind, size)
    x = torch.randn(2, C_IN, size, size, requires_grad=True)
    logits, h = head(x)
    assert logits.shape == (2, CLASSES) and h.shape == (2,)
    assert ((h > 0) & (h < 1)).all()
    (logits.sum() + h.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_plain_feeds_flattened_maps_to_both_branches():
    head = PlainExit(2, 3, spatial_size=(2, 3))
    x = torch.randn(5, 2, 2, 3)
    logits, h = head(x)
    z = x.reshape(5, -1)
    assert head.classifier.in_features == 12
    assert torch.allclose(logits, z @ head.classifier.weight.T + head.classifier.bias)  # no softmax here
    assert torch.allclose(h, torch.sigmoid(z @ head.confidence.weight.T + head.confidence.bias).squeeze(1))


def test_pool_averages_before_the_branches():
    head = PoolExit(2, 3)
    x = torch.randn(5, 2, 4, 4)
    logits, h = head(x)
    z = x.mean(dim=(2, 3))  # Eq. 1
    assert torch.allclose(logits, z @ head.classifier.weight.T + head.classifier.bias, atol=1e-6)
    assert torch.allclose(h, torch.sigmoid(z @ head.confidence.weight.T + head.confidence.bias).squeeze(1), atol=1e-6)


def test_bnpool_is_batchnorm_relu_pool():
    head = BnpoolExit(2, 3).eval()
    with torch.no_grad():
        head.reduce[0].running_mean.copy_(torch.tensor([1.0, -1.0]))
        head.reduce[0].running_var.copy_(torch.tensor([4.0, 1.0]))
    x = torch.tensor([[[[3.0, -5.0]], [[0.0, -3.0]]]])  # [1, 2, 1, 2]
    # BN (eval): (x − mean)/sqrt(var + 1e-5); ReLU; mean over the 2 positions.
    s = (4.0 + 1e-5) ** 0.5, (1.0 + 1e-5) ** 0.5
    z = torch.tensor([[(max((3.0 - 1) / s[0], 0) + max((-5.0 - 1) / s[0], 0)) / 2,
                       (max((0.0 + 1) / s[1], 0) + max((-3.0 + 1) / s[1], 0)) / 2]])
    logits, h = head(x)
    assert torch.allclose(logits, z @ head.classifier.weight.T + head.classifier.bias, atol=1e-6)
    assert torch.allclose(h, torch.sigmoid(z @ head.confidence.weight.T + head.confidence.bias).squeeze(1), atol=1e-6)


def test_heads_reject_wrong_inputs():
    with pytest.raises(ShapeError):
        PoolExit(4, 3)(torch.randn(2, 5, 4, 4))
    with pytest.raises(ShapeError):
        PoolExit(4, 3)(torch.randn(2, 4))
    plain = PlainExit(4, 3, spatial_size=8)
    with pytest.raises(ShapeError):
        plain(torch.randn(2, 4, 4, 4))
    lazy = PlainExit(4, 3)
    lazy(torch.randn(2, 4, 8, 8))
    with pytest.raises(ShapeError):
        lazy(torch.randn(2, 4, 4, 4))
    with pytest.raises(ConfigError):
        make_exit_block("fancy", 4, 3)
    with pytest.raises(ConfigError):
        PoolExit(0, 3)


def test_heads_train_inside_an_early_exit_net_with_l_v2():
    torch.manual_seed(0)
    segments = [nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())]
    heads = [BnpoolExit(4, 5), PlainExit(4, 5, spatial_size=4),
             nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))]
    net = EarlyExitNet(segments, heads, exit_names=["e0", "e1", "final"])
    logits, h = net.forward_exits(torch.randn(4, 3, 8, 8))
    loss = eenet_loss(logits, h, torch.tensor([0, 1, 2, 3]), [0.3, 0.6, 1.0])
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in net.parameters())
