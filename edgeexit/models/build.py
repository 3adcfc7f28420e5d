"""Build an EarlyExitNet from a config: pick the backbone, place the exits, attach the heads."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from edgeexit.errors import ConfigError
from edgeexit.models import efficientnet_lite, small_families
from edgeexit.models import torchvision_families as tv
from edgeexit.models.adapters import Backbone
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
    "efficientnet_lite0": efficientnet_lite.efficientnet_lite0,
    "cifar_resnet20": small_families.cifar_resnet,
    "tiny_cnn": small_families.tiny_cnn,
}
HEAD_KINDS = ("aep", "conv", "plain", "pool", "bnpool")


def list_backbones() -> list[str]:
    """Every backbone name with an adapter. Other sizes work by name: efficientnet_b1..b7, cifar_resnet<6n+2>, and
    the vision transformers vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14 (`edgeexit.models.vit`)."""
    return list(_BUILDERS)


def backbone(name: str, *, num_classes: int, in_channels: int, weights=None, image_size: int = 224) -> Backbone:
    """The adapter for `name`, built with a fresh (or given) set of weights. `image_size` matters to the vision
    transformers only (their position embeddings are sized for it)."""
    from edgeexit.models import vit

    if vit.is_vit(name):
        return vit.vit(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size, weights=weights)
    if name in _BUILDERS and not name.startswith("cifar_resnet"):
        return _BUILDERS[name](num_classes=num_classes, in_channels=in_channels, weights=weights)
    if m := re.fullmatch(r"efficientnet_b([0-7])", name):
        return tv.efficientnet(name, num_classes=num_classes, in_channels=in_channels, weights=weights)
    if m := re.fullmatch(r"cifar_resnet(\d+)", name):
        return small_families.cifar_resnet(depth=int(m.group(1)), num_classes=num_classes, in_channels=in_channels, weights=weights)
    raise ConfigError("unknown backbone", got=name, expected=", ".join(list_backbones()),
                      hint="other sizes by name: efficientnet_b1..b7, cifar_resnet<6n+2>, vit_b_16...; or your own "
                           "model: --model mypkg.models:build_net --exits layer1,layer2")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the same network (stored in checkpoints and the bundle manifest)."""

    backbone: str = "resnet18"  # an adapter's name; for a `model`, a name for reports (the model spec)
    num_classes: int = 10
    in_channels: int = 1
    image_size: int = 32
    # "stages" | "full" | "blocks" | "eenet:<distribution>:<n early exits>" | block indices after which exits go |
    # block names (module paths for a `model`: the split points)
    exits: str | list[int] | list[str] = "stages"
    head: str = "aep"  # "aep": the classifier replicated (AEP); "conv": MSDNet's classifier on feature maps
    # (conv_heads.py; the CLI's default), AEP's on tokens; "plain" | "pool" | "bnpool": EENet exit blocks
    weights: str | None = None  # a weights file (state_dict or torch.export archive); "imagenet" for efficientnet_lite0
    gater_features: tuple[str, ...] | None = None  # budget-aware gater (hal-04683503) on these exit features, or none
    gater_hidden: int = 500  # the gater MLP's hidden width (Addad et al., hal-04683503, Supplementary B)
    # A user's own model: "package.module:function" or "torchvision:<name>", called with `model_kwargs`; its exits
    # are module paths (`exits`), or the ViT preset's placements for a VisionTransformer (edgeexit.models.user).
    # Read back from a checkpoint, a "package.module:function" is called only when the user passes it again
    # (edgeexit.models.user.check_stored_spec, in model_from_checkpoint)
    model: str | None = None
    model_kwargs: dict | None = None

    def __post_init__(self) -> None:
        # Lists from JSON and "a,b" from the command line become one tuple, so configs compare as values.
        if isinstance(self.gater_features, str):
            self.gater_features = tuple(f.strip() for f in self.gater_features.split(",") if f.strip())
        elif self.gater_features is not None:
            self.gater_features = tuple(self.gater_features)
        self.gater_features = self.gater_features or None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def exit_blocks(bb: Backbone, exits: str | list[int], *, in_channels: int | None = None,
                image_size: int | None = None) -> list[int]:
    """Block indices after which exits go, for a placement name or an explicit list.

    "eenet:<distribution>:<n>" places n early exits by the share of the model's MACs spent before them
    (EENets, arXiv:2409.05336, Sec. 3.4; `placement.place_exits`), which needs the input size (`in_channels`,
    `image_size`).
    """
    last = len(bb.blocks) - 1
    if exits == "stages":
        return list(bb.stages)
    if exits == "full":
        return list(bb.full or bb.stages)
    if exits == "blocks":
        return list(range(last + 1))
    if isinstance(exits, str) and exits.startswith("eenet:"):
        return _eenet_exits(bb, exits, in_channels, image_size)
    if isinstance(exits, list) and exits and all(isinstance(e, str) for e in exits):
        return sorted({_block_by_name(bb, e) for e in exits} | {last})
    if isinstance(exits, str):
        raise ConfigError("unknown exit placement", got=exits,
                          expected="stages, full, blocks, eenet:<distribution>:<n>, or a list of block indices",
                          hint=f"{bb.name} has blocks {', '.join(f'{i}:{n}' for i, n in enumerate(bb.block_names))}")
    idx = sorted(set(int(i) for i in exits) | {last})
    if idx[0] < 0 or idx[-1] > last:
        raise ConfigError("exit after a block that does not exist", got=list(exits), expected=f"block indices 0..{last}",
                          hint=f"{bb.name} blocks: {', '.join(bb.block_names)}")
    return idx


def _block_by_name(bb: Backbone, name: str) -> int:
    """The block called `name`, or the last block inside the module path `name` (resnet18's "layer1" is its block
    "layer1.1")."""
    if name in bb.block_names:
        return bb.block_names.index(name)
    inside = [i for i, n in enumerate(bb.block_names) if n.startswith(name + ".")]
    if inside:
        return inside[-1]
    raise ConfigError("no block of this name to put an exit after", got=name,
                      expected=f"one of {', '.join(bb.block_names[:-1])}" if len(bb.block_names) < 40 else
                      f"one of {len(bb.block_names)} block names", hint="`edgeexit backbones` lists them")


def _eenet_exits(bb: Backbone, exits: str, in_channels: int | None, image_size: int | None) -> list[int]:
    from edgeexit.models.placement import DISTRIBUTIONS, place_exits

    parts = exits.split(":")
    if len(parts) != 3 or parts[1] not in DISTRIBUTIONS or not parts[2].isdigit() or int(parts[2]) < 1:
        raise ConfigError("bad EENet exit placement", got=exits, expected=f"eenet:<{'|'.join(DISTRIBUTIONS)}>:<n >= 1>",
                          hint="e.g. eenet:pareto:4 puts 4 early exits at 20 %, 36 %, 49 %, 59 % of the MACs")
    if in_channels is None or image_size is None:
        raise ConfigError("EENet placement needs the input size to count MACs", got=(in_channels, image_size),
                          expected="in_channels and image_size")
    return place_exits(block_macs(bb, in_channels, image_size), int(parts[2]), parts[1]) + [len(bb.blocks) - 1]


def block_macs(bb: Backbone, in_channels: int, image_size: int) -> list[int]:
    """Cumulative MACs of one image after each block of `bb` (FLOPs / 2 from torch.utils.flop_counter, as
    `edgeexit.models.costs` counts them); the last entry adds the final classifier, so it is the whole model."""
    from edgeexit.models.costs import count_macs

    modules = [*bb.blocks, bb.final_head]
    was_training = [m.training for m in modules]
    x, total, cumulative = torch.zeros(1, in_channels, image_size, image_size), 0, []
    with torch.no_grad():
        for m in modules:
            m.eval()
            macs, x = count_macs(m, x)
            total += macs
            cumulative.append(total)
    for m, t in zip(modules, was_training):
        m.train(t)
    return cumulative[:-2] + [cumulative[-1]]


def _make_head(kind: str, shape: tuple[int, ...], num_classes: int, bb: Backbone) -> nn.Module:
    if kind == "aep":
        return bb.head_for_shape(shape, num_classes) if bb.head_for_shape else bb.make_head(shape[0], num_classes)
    if kind == "conv":  # on feature maps; a transformer's tokens have none: its class-token head, as for aep
        if len(shape) != 3:
            return _make_head("aep", shape, num_classes, bb)
        from edgeexit.models.conv_heads import msdnet_head

        return msdnet_head(shape, num_classes)
    if kind in ("plain", "pool", "bnpool") and len(shape) != 3:
        raise ConfigError("EENet exit blocks need feature maps", got=f"features of shape {shape} at an exit",
                          expected="(C, H, W)", hint="--head aep puts a class-token head on transformer exits")
    if kind in ("plain", "pool", "bnpool"):
        from edgeexit.models import eenet_heads

        return eenet_heads.make_exit_block(kind, shape[0], num_classes, spatial_size=tuple(shape[1:]))
    raise ConfigError("unknown head kind", got=kind, expected=", ".join(HEAD_KINDS), hint="aep for AEP, conv for MSDNet's classifier, plain/pool/bnpool for EENets")


def build_model(cfg: ModelConfig) -> EarlyExitNet:
    """The early-exit network for `cfg`: segments between exits, one head per intermediate exit, the final classifier."""
    bb = _backbone(cfg)
    if cfg.model is not None and isinstance(cfg.exits, list):  # the model was cut at exactly these module paths
        points = list(range(len(bb.blocks)))
    else:
        points = exit_blocks(bb, cfg.exits, in_channels=cfg.in_channels, image_size=cfg.image_size)
    segments, names, start = [], [], 0
    for p in points:
        segments.append(nn.Sequential(*bb.blocks[start:p + 1]))
        names.append(bb.block_names[p])
        start = p + 1
    shapes = _exit_shapes(segments, cfg.in_channels, cfg.image_size)
    heads = [_make_head(cfg.head, s, cfg.num_classes, bb) for s in shapes[:-1]] + [bb.final_head]
    gater = None
    if cfg.gater_features:
        from edgeexit.models.gater import Gater

        gater = Gater(cfg.gater_features, cfg.gater_hidden)
    return EarlyExitNet(segments, heads, exit_names=names, gater=gater)


def _backbone(cfg: ModelConfig) -> Backbone:
    if cfg.model is None:
        return backbone(cfg.backbone, num_classes=cfg.num_classes, in_channels=cfg.in_channels, weights=cfg.weights,
                        image_size=cfg.image_size)
    from torchvision.models.vision_transformer import VisionTransformer

    from edgeexit.models import user, vit

    model = user.build_user_model(cfg.model, cfg.model_kwargs, in_channels=cfg.in_channels, weights=cfg.weights)
    user.check_logits(model, cfg.in_channels, cfg.image_size, cfg.num_classes, cfg.model)
    # module paths; indices name the children of an nn.Sequential ("0", "3"), which are module paths too
    paths = [str(e) for e in cfg.exits] if isinstance(cfg.exits, list) else None
    if paths is None and isinstance(model, VisionTransformer):
        return vit.vit_backbone(model, name=cfg.model)
    if paths is None:
        raise ConfigError("name the split points of your model by module path", got=f"--exits {cfg.exits}",
                          expected="comma-separated module paths, e.g. --exits layer1,layer2,layer3",
                          hint="print(model) lists its modules; vision transformers also take stages / full")
    return user.user_backbone(model, paths, name=cfg.model)


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
