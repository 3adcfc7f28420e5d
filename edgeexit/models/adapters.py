"""What an adapter tells edgeexit about a backbone: its blocks, where its stages end, its classifier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Backbone:
    """A backbone cut into its finest split units.

    `blocks` run in order give the backbone's feature extractor; an exit may follow any block.
    `stages` / `full` list the block indices after which the per-stage (AEP) and the "full" placements
    put their exits (the last index is always the last block). `make_head(channels, num_classes)`
    replicates the backbone's classifier for an exit (AEP); `final_head` is the original classifier.
    `head_for_shape(feature_shape, num_classes)`, when set, builds the AEP head from the whole shape of one
    sample's features instead (a user's model, whose exits may see feature maps or transformer tokens).
    """

    name: str
    blocks: list[nn.Module]
    block_names: list[str]
    stages: list[int]
    make_head: Callable[[int, int], nn.Module]
    final_head: nn.Module
    full: list[int] | None = None
    head_for_shape: Callable[[tuple[int, ...], int], nn.Module] | None = None

    def __post_init__(self) -> None:
        last = len(self.blocks) - 1
        for placement in (self.stages, self.full or self.stages):
            if placement[-1] != last or sorted(set(placement)) != placement:
                raise ValueError(f"{self.name}: placement {placement} must be increasing and end at block {last}")


def gap_linear_head(channels: int, num_classes: int) -> nn.Module:
    """Global average pooling and one dense layer: ResNet's classifier, and AEP's head for VGG."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, num_classes))


def adapt_in_channels(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution for another number of input channels (grayscale data on an RGB backbone).

    Pretrained RGB filters are summed over their input channels for one channel, which is what the
    filters would compute on a gray image replicated to RGB; other counts are re-initialised.
    """
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(
        in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
    )
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def resolution_groups(blocks: list[nn.Module], in_channels: int, size: int = 64) -> list[int]:
    """Indices of the last block at each spatial resolution (a stage ends where the next block downsamples)."""
    x = torch.zeros(1, in_channels, size, size)
    sizes = []
    with torch.no_grad():
        for block in blocks:
            block.eval()
            x = block(x)
            sizes.append(x.shape[-1])
    return [i for i in range(len(sizes)) if i == len(sizes) - 1 or sizes[i + 1] != sizes[i]]
