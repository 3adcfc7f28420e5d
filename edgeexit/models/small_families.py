"""Backbones that torchvision does not have: the CIFAR-style ResNet of EENets, a tiny CNN for tests, and a
user's own sequential model split at named points."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from edgeexit.errors import ConfigError
from edgeexit.models.adapters import Backbone, gap_linear_head


class BasicBlock(nn.Module):
    """The 3x3-3x3 residual block of He et al. (2016) for CIFAR, with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def cifar_resnet(*, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16, weights=None) -> Backbone:
    """ResNet-(6n+2) for 32 px images (He et al. 2016, as used by EENets): 3 stages of n blocks, 16/32/64 channels."""
    if weights is not None:
        raise ConfigError("cifar_resnet has no pretrained weights", got=weights, expected="weights=None",
                          hint="train it from scratch, or load an edgeexit checkpoint with --resume")
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError("bad CIFAR ResNet depth", got=depth, expected="6n+2 with n >= 1 (8, 14, 20, 32, 56, 110)",
                          hint="e.g. --depth 20")
    n = (depth - 2) // 6
    blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())]
    names, stages, cin = ["stem"], [], width
    for s in range(3):
        cout = width * 2**s
        for b in range(n):
            blocks.append(BasicBlock(cin, cout, 2 if (b == 0 and s > 0) else 1))
            names.append(f"stage{s + 1}.{b}")
            cin = cout
        stages.append(len(blocks) - 1)
    return Backbone(f"cifar_resnet{depth}", blocks, names, stages, gap_linear_head, gap_linear_head(cin, num_classes),
                    full=list(range(1, len(blocks))))


def tiny_cnn(*, num_classes: int = 10, in_channels: int = 3, width: int = 8, weights=None) -> Backbone:
    """Three conv-bn-relu-pool blocks; small enough that tests export and run it in milliseconds."""
    if weights is not None:
        raise ConfigError("tiny_cnn has no weights files", got=weights, expected="weights=None",
                          hint="for your own trained model: --model mypkg.models:build_net --weights FILE")
    blocks, cin = [], in_channels
    for i in range(3):
        cout = width * 2**i
        blocks.append(nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)))
        cin = cout
    return Backbone("tiny_cnn", blocks, ["block1", "block2", "block3"], [0, 1, 2], gap_linear_head,
                    gap_linear_head(cin, num_classes))


def from_sequential(model: nn.Sequential, split_after: Sequence[int], classifier: nn.Module, *, name: str = "custom",
                    make_head=gap_linear_head) -> Backbone:
    """A user's own feature extractor, split after the given layer indices; `classifier` is its final head."""
    layers = list(model)
    points = sorted(set(int(i) for i in split_after) | {len(layers) - 1})
    if points[0] < 0 or points[-1] >= len(layers):
        raise ConfigError("split point outside the model", got=list(split_after), expected=f"indices in 0..{len(layers) - 1}",
                          hint="name the index of the layer after which each exit goes")
    blocks, start = [], 0
    for p in points:
        blocks.append(nn.Sequential(*layers[start:p + 1]))
        start = p + 1
    names = [f"layers{points[i - 1] + 1 if i else 0}-{p}" for i, p in enumerate(points)]
    return Backbone(name, blocks, names, list(range(len(blocks))), make_head, classifier)
