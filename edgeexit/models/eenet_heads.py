"""EENet early-exit blocks Plain, Pool and Bnpool (Demir & Akbas, arXiv:2409.05336, Sec. 3.1, Fig. 2, Eq. 1-2).

Each block has two separate fully-connected branches fed by the same input:

    ŷ_n = softmax(w_1ᵀ z(x))      classification branch ("fc C, softmax")
    h_n = σ(w_2ᵀ z(x))            confidence branch ("fc 1, sigmoid")

and differs only in z(x):

    Plain    z(x) = x, flattened (the feature maps go straight into the FC branches)
    Pool     z(x) = global average pooling of x (Eq. 1)
    Bnpool   z(x) = global average pooling of ReLU(BatchNorm(x))

`forward(x)` returns (logits [B, C], h [B]). The softmax is left to the loss and the exit score
(`edgeexit.train.losses.eenet_loss` applies it), so the block returns w_1ᵀ z(x).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgeexit.errors import ConfigError, ShapeError


class _EENetExit(nn.Module):
    """z(x) = self.reduce(x) flattened, then the two FC branches."""

    def __init__(self, in_channels: int, num_classes: int, reduce: nn.Module, features: int | None):
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ConfigError("an exit block needs positive channel and class counts",
                              got=(in_channels, num_classes), expected="in_channels ≥ 1, num_classes ≥ 1")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.reduce = reduce
        # features=None: the flattened size is only known at the first forward (Plain without spatial_size).
        self.classifier = nn.Linear(features, num_classes) if features else nn.LazyLinear(num_classes)
        self.confidence = nn.Linear(features, 1) if features else nn.LazyLinear(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"{type(self).__name__} expects feature maps [B, {self.in_channels}, H, W]",
                             got=tuple(x.shape))
        z = torch.flatten(self.reduce(x), 1)
        expected = self.classifier.in_features  # 0 while a lazy layer is not yet built
        if expected and z.shape[1] != expected:
            raise ShapeError(f"{type(self).__name__} was built for another feature-map size",
                             got=tuple(x.shape), expected=f"C·H·W = {expected}",
                             hint="a Plain exit flattens its input; build one per exit location")
        return self.classifier(z), torch.sigmoid(self.confidence(z)).squeeze(1)


class PlainExit(_EENetExit):
    """Plain exit: the flattened feature maps feed the two FC branches directly (Fig. 2, left).

    The FC width is C·H·W: give `spatial_size` (H, W) of the feature maps at this exit, or leave it
    None and the layers are built at the first forward (run one batch before creating the optimizer).
    """

    def __init__(self, in_channels: int, num_classes: int, *, spatial_size: int | tuple[int, int] | None = None):
        if spatial_size is None:
            features = None
        else:
            h, w = (spatial_size, spatial_size) if isinstance(spatial_size, int) else spatial_size
            if h < 1 or w < 1:
                raise ConfigError("spatial size must be positive", got=spatial_size)
            features = in_channels * h * w
        super().__init__(in_channels, num_classes, nn.Identity(), features)


class PoolExit(_EENetExit):
    """Pool exit: global average pooling, then the two FC branches (Fig. 2, middle; Eq. 1-2)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(in_channels, num_classes, nn.AdaptiveAvgPool2d(1), in_channels)


class BnpoolExit(_EENetExit):
    """Bnpool exit: BatchNorm, ReLU, global average pooling, then the two FC branches (Fig. 2, right)."""

    def __init__(self, in_channels: int, num_classes: int):
        reduce = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        super().__init__(in_channels, num_classes, reduce, in_channels)


EXIT_BLOCKS = {"plain": PlainExit, "pool": PoolExit, "bnpool": BnpoolExit}


def make_exit_block(kind: str, in_channels: int, num_classes: int, *,
                    spatial_size: int | tuple[int, int] | None = None) -> nn.Module:
    """The EENet exit block named `kind` ("plain" | "pool" | "bnpool"; the paper's experiments use
    "pool", Sec. 4.4). `spatial_size` (H, W) of the feature maps sizes a Plain block's FC layers up
    front; without it they are built at the first forward. Pool and Bnpool do not need it.
    """
    if kind not in EXIT_BLOCKS:
        raise ConfigError("unknown EENet exit block", got=kind, expected=" | ".join(EXIT_BLOCKS))
    if kind == "plain":
        return PlainExit(in_channels, num_classes, spatial_size=spatial_size)
    return EXIT_BLOCKS[kind](in_channels, num_classes)
