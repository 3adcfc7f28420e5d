"""Build an EarlyExitNet from a config: pick the backbone, place the exits, attach the heads."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from edgeexit.errors import ConfigError
from edgeexit.models import small_families, torchvision_families as tv
from edgeexit.models.backbone import Backbone
from edgeexit.models.net import EarlyExitNet

_BUILDERS: dict[str, Callable[..., Backbone]] = {
    "resnet18": tv.resnet18,
    "resnet50": tv.resnet50,
    "vgg16": tv.vgg16,
    "densenet121": tv.densenet121,
    "densenet169": tv.densenet169,
    "mobilenet_v3_small": tv.mobilenet_v3_small,
    "mobilenet_v3_large": tv.mobilenet_v3_large,
    "efficientnet_b0": tv.efficientnet_b0,
    "cifar_resnet20": small_families.cifar_resnet,
    "tiny_cnn": small_families.tiny_cnn,
}
HEAD_KINDS = ("aep", "plain", "pool", "bnpool")


def list_backbones() -> list[str]:
    """Every backbone name with an adapter. Other sizes work by name: efficientnet_b1..b7, cifar_resnet<6n+2>."""
    return list(_BUILDERS)


def backbone(name: str, *, num_classes: int, in_channels: int, weights=None) -> Backbone:
    """The adapter for `name`, built with a fresh (or given) set of weights."""
    if name in _BUILDERS and not name.startswith("cifar_resnet"):
        return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, weights=weights)
    if m := re.fullmatch(r"efficientnet_b([0-7])", name):
        return tv.efficientnet(name, num_classes=num_classes, in_channels=in_channels, weights=weights)
    if m := re.fullmatch(r"cifar_resnet(\d+)", name):
        return small_families.cifar_resnet(depth=int(m.group(1)), num_classes=num_classes, in_channels=in_channels, weights=weights)
    raise ConfigError("unknown backbone", got=name, expected=", ".join(list_backbones()),
                      hint="other sizes by name: efficientnet_b1..b7, cifar_resnet<6n+2>; or wrap your own with from_sequential")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the same network (stored in checkpoints and the bundle manifest)."""

    backbone: str = "resnet18"
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 32
    exits: str | list[int] = "stages"  # "stages" | "full" | "blocks" | block indices after which exits go
    head: str = "aep"  # "aep": the classifier replicated (AEP); "plain" | "pool" | "bnpool": EENet exit blocks
    weights: str | None = None  # a torchvision state_dict file to fine-tune from

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def exit_blocks(bb: Backbone, exits: str | list[int]) -> list[int]:
    """Block indices after which exits go, for a placement name or an explicit list."""
    last = len(bb.blocks) - 1
    if exits == "stages":
        return list(bb.stages)
    if exits == "full":
        return list(bb.full or bb.stages)
    if exits == "blocks":
        return list(range(last + 1))
    if isinstance(exits, str):
        raise ConfigError("unknown exit placement", got=exits, expected="stages, full, blocks, or a list of block indices",
                          hint=f"{bb.name} has blocks {', '.join(f'{i}:{n}' for i, n in enumerate(bb.block_names))}")
    idx = sorted(set(int(i) for i in exits) | {last})
    if idx[0] < 0 or idx[-1] > last:
        raise ConfigError("exit after a block that does not exist", got=list(exits), expected=f"block indices 0..{last}",
                          hint=f"{bb.name} blocks: {', '.join(bb.block_names)}")
    return idx


def _make_head(kind: str, shape: tuple[int, int, int], num_classes: int, bb: Backbone) -> nn.Module:
    if kind == "aep":
        return bb.make_head(shape[0], num_classes)
    if kind in ("plain", "pool", "bnpool"):
        from edgeexit.models import eenet_heads

        return eenet_heads.make_exit_block(kind, shape[0], num_classes, spatial_size=tuple(shape[1:]))
    raise ConfigError("unknown head kind", got=kind, expected=", ".join(HEAD_KINDS), hint="aep for AEP, plain/pool/bnpool for EENets")


def build_model(cfg: ModelConfig) -> EarlyExitNet:
    """The early-exit network for `cfg`: segments between exits, one head per intermediate exit, the final classifier."""
    bb = backbone(cfg.backbone, num_classes=cfg.num_classes, in_channels=cfg.in_channels, weights=cfg.weights)
    points = exit_blocks(bb, cfg.exits)
    segments, names, start = [], [], 0
    for p in points:
        segments.append(nn.Sequential(*bb.blocks[start:p + 1]))
        names.append(bb.block_names[p])
        start = p + 1
    shapes = _exit_shapes(segments, cfg.in_channels, cfg.image_size)
    heads = [_make_head(cfg.head, s, cfg.num_classes, bb) for s in shapes[:-1]] + [bb.final_head]
    return EarlyExitNet(segments, heads, exit_names=names)


def _exit_shapes(segments: list[nn.Module], in_channels: int, image_size: int) -> list[tuple[int, int, int]]:
    """(C, H, W) of the features at every exit, from one dummy forward pass."""
    x = torch.zeros(2, in_channels, image_size, image_size)
    shapes = []
    was_training = [s.training for s in segments]
    with torch.no_grad():
        for s in segments:
            s.eval()
            x = s(x)
            shapes.append(tuple(x.shape[1:]))
    for s, t in zip(segments, was_training):
        s.train(t)
    return shapes
