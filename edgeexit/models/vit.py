"""Vision transformers (torchvision's ViT, Dosovitskiy et al. 2021) as a preset of the module-path splitter
(`edgeexit.models.user`): exits after encoder blocks, heads on the class token (LayerNorm + dense, ViT's own
classifier replicated).

Every size torchvision has works by name: vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14, at any image size that
the patch size divides (the position embeddings of a weights file saved at another size are interpolated, as
torchvision's fine-tuning recipe does). Any other `VisionTransformer` returned by a `--model` builder takes the same
preset. Candidate exits are after every encoder block but the last (the final classifier follows it); "stages" puts
exits at a quarter, half and three quarters of the depth, "full" after every block.
"""

from __future__ import annotations

import re

import torchvision
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

from edgeexit.errors import ConfigError
from edgeexit.models.adapters import Backbone, adapt_in_channels
from edgeexit.models.user import user_backbone

NAME = re.compile(r"vit_[blh]_\d+")


def is_vit(name: str) -> bool:
    return bool(NAME.fullmatch(name)) and hasattr(torchvision.models, name)


def encoder_paths(model: VisionTransformer) -> list[str]:
    """Module paths of the encoder blocks an exit may follow: all but the last."""
    return [f"encoder.layers.{name}" for name, _ in model.encoder.layers.named_children()][:-1]


def vit_backbone(model: VisionTransformer, *, name: str) -> Backbone:
    """`model` cut after every encoder block but the last; stages at 1/4, 1/2, 3/4 of the depth."""
    paths = encoder_paths(model)
    if not paths:
        raise ConfigError("a ViT with one encoder block has no place for an early exit", got=name,
                          expected="num_layers >= 2")
    depth = len(paths) + 1
    stages = sorted({max(0, round(depth * q) - 1) for q in (0.25, 0.5, 0.75)} - {depth - 1})
    return user_backbone(model, paths, name=name, stages=stages)


def vit(name: str, *, num_classes: int, in_channels: int, image_size: int, weights=None) -> Backbone:
    """torchvision's `name` (vit_b_16, ...) for `image_size` px images of `in_channels` channels."""
    if not is_vit(name):
        raise ConfigError("unknown vision transformer", got=name, expected="vit_b_16 | vit_b_32 | vit_l_16 | vit_l_32 | vit_h_14")
    builder = getattr(torchvision.models, name)
    if weights is None:
        model = builder(weights=None, num_classes=num_classes, image_size=image_size)
    else:
        from edgeexit.models.weights import load_weights, read_weights

        state = read_weights(weights)
        if "encoder.pos_embedding" in state:  # saved at another image size: interpolate, as torchvision does
            state = interpolate_embeddings(image_size, int(name.rsplit("_", 1)[1]), state)
        heads = state.get("heads.head.weight")
        model = builder(weights=None, image_size=image_size,
                        num_classes=heads.shape[0] if heads is not None else num_classes)
        load_weights(model, state, what=f"torchvision.models.{name}")
        if model.heads.head.out_features != num_classes:  # e.g. ImageNet's 1000 classes
            model.heads.head = nn.Linear(model.hidden_dim, num_classes)
    model.conv_proj = adapt_in_channels(model.conv_proj, in_channels)
    return vit_backbone(model, name=name)
