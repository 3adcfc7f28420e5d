"""Adapters for the torchvision families: where their stages end and what their classifier looks like.

One builder per model name, keyword-only, like torchvision's own. Weights are never downloaded: pass a
state_dict file of the torchvision model (`weights=`) to fine-tune from pretrained weights.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torchvision
from torch import nn

from edgeexit.models.adapters import (
    Backbone,
    adapt_in_channels,
    gap_linear_head,
    resolution_groups,
)


def _load_torchvision(name: str, num_classes: int, weights: str | Path | None) -> nn.Module:
    """The torchvision model, with weights from a file (`edgeexit.models.weights.read_weights`: a state_dict
    or a torch.export archive, never a pickle). Layers whose saved shape differs from the stock model (a
    model the user trained on 1-channel images or 10 classes) take the file's shape; a 1000-class head is replaced
    after loading."""
    from edgeexit.models.weights import load_weights

    builder = getattr(torchvision.models, name)
    if weights is None:
        return builder(weights=None, num_classes=num_classes)
    return load_weights(builder(weights=None), weights, what=f"torchvision.models.{name}")


def _replace_last_linear(head: nn.Sequential, num_classes: int) -> nn.Sequential:
    for i in reversed(range(len(head))):
        if isinstance(head[i], nn.Linear):
            if head[i].out_features != num_classes:
                head[i] = nn.Linear(head[i].in_features, num_classes)
            return head
    raise ValueError("classifier has no Linear layer")


# --- ResNet -------------------------------------------------------------------------------------------------

def _resnet(name: str, *, num_classes: int, in_channels: int, weights) -> Backbone:
    m = _load_torchvision(name, num_classes, weights)
    m.conv1 = adapt_in_channels(m.conv1, in_channels)
    blocks, names, stages = [nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)], ["stem"], []
    for li in range(1, 5):
        for bi, block in enumerate(getattr(m, f"layer{li}")):
            blocks.append(block)
            names.append(f"layer{li}.{bi}")
        stages.append(len(blocks) - 1)
    final = _replace_last_linear(nn.Sequential(m.avgpool, nn.Flatten(1), m.fc), num_classes)
    return Backbone(name, blocks, names, stages, gap_linear_head, final)


def resnet18(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    return _resnet("resnet18", num_classes=num_classes, in_channels=in_channels, weights=weights)


def resnet50(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    return _resnet("resnet50", num_classes=num_classes, in_channels=in_channels, weights=weights)


# --- VGG ----------------------------------------------------------------------------------------------------

def vgg16(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    """VGG-16 cut after every conv layer; stages end at the five max-pools.

    AEP replaces VGG's over-parameterised classifier by global average pooling and one dense layer at
    every exit, the final one included, so the final head is GAP + dense too (AEP, arXiv:2301.12168, Sec. IV-A).
    """
    m = _load_torchvision("vgg16", num_classes, weights)
    layers = list(m.features)
    layers[0] = adapt_in_channels(layers[0], in_channels)
    blocks, names, stages, current, conv_i = [], [], [], [], 0
    for layer in layers:
        current.append(layer)
        if isinstance(layer, nn.ReLU):
            conv_i += 1
            blocks.append(nn.Sequential(*current))
            names.append(f"conv{conv_i}")
            current = []
        elif isinstance(layer, nn.MaxPool2d):
            blocks[-1] = nn.Sequential(*blocks[-1], layer)  # the pool closes the stage
            current = []
            stages.append(len(blocks) - 1)
    channels = m.classifier[0].in_features // 49
    return Backbone("vgg16", blocks, names, stages, gap_linear_head, gap_linear_head(channels, num_classes))


# --- DenseNet -----------------------------------------------------------------------------------------------

def _densenet_head(channels: int, num_classes: int) -> nn.Module:
    # torchvision's DenseNet classifier is relu -> GAP -> linear (after norm5); not inplace, the features go on.
    return nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels, num_classes))


def _densenet(name: str, *, num_classes: int, in_channels: int, weights) -> Backbone:
    m = _load_torchvision(name, num_classes, weights)
    f = m.features
    f.conv0 = adapt_in_channels(f.conv0, in_channels)
    blocks = [
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0, f.denseblock1, f.transition1),
        nn.Sequential(f.denseblock2, f.transition2),
        nn.Sequential(f.denseblock3, f.transition3),
        nn.Sequential(f.denseblock4, f.norm5),
    ]
    names = ["denseblock1", "denseblock2", "denseblock3", "denseblock4"]
    final = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), m.classifier)
    return Backbone(name, blocks, names, [0, 1, 2, 3], _densenet_head, final)


def densenet121(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    return _densenet("densenet121", num_classes=num_classes, in_channels=in_channels, weights=weights)


def densenet169(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    return _densenet("densenet169", num_classes=num_classes, in_channels=in_channels, weights=weights)


# --- MobileNetV3 --------------------------------------------------------------------------------------------

def _mobilenet_v3(name: str, *, num_classes: int, in_channels: int, weights) -> Backbone:
    m = _load_torchvision(name, num_classes, weights)
    stem = m.features[0][0]
    m.features[0][0] = adapt_in_channels(stem, in_channels)
    blocks = list(m.features)
    names = ["stem"] + [f"features.{i}" for i in range(1, len(blocks))]
    full = resolution_groups(blocks, in_channels)
    stages = full[1:] if full[0] == 0 else full  # an exit on the stem alone is not a stage

    def head(channels: int, classes: int) -> nn.Module:
        # The classifier replicated: GAP -> Linear(C, hidden) -> Hardswish -> Dropout -> Linear(hidden, classes).
        h = copy.deepcopy(m.classifier)
        h[0] = nn.Linear(channels, h[0].out_features)
        h[-1] = nn.Linear(h[-1].in_features, classes)
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), *_not_inplace(h))

    final = nn.Sequential(m.avgpool, nn.Flatten(1), *_not_inplace(_replace_last_linear(m.classifier, num_classes)))
    return Backbone(name, blocks, names, stages, head, final, full=full)


def _not_inplace(seq: nn.Sequential) -> list[nn.Module]:
    for layer in seq:
        if hasattr(layer, "inplace"):
            layer.inplace = False
    return list(seq)


def mobilenet_v3_small(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    return _mobilenet_v3("mobilenet_v3_small", num_classes=num_classes, in_channels=in_channels, weights=weights)


def mobilenet_v3_large(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    return _mobilenet_v3("mobilenet_v3_large", num_classes=num_classes, in_channels=in_channels, weights=weights)


# --- EfficientNet -------------------------------------------------------------------------------------------

def efficientnet(name: str = "efficientnet_b0", *, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    """EfficientNet-B0..B7: exits per resolution stage; "full" puts one after each of the 7 MBConv stages."""
    m = _load_torchvision(name, num_classes, weights)
    return efficientnet_from_features(name, m.features, m.classifier, num_classes=num_classes, in_channels=in_channels)


def efficientnet_from_features(name: str, features: nn.Sequential, classifier: nn.Sequential, *,
                               num_classes: int, in_channels: int) -> Backbone:
    features[0][0] = adapt_in_channels(features[0][0], in_channels)
    blocks = list(features)
    names = ["stem"] + [f"stage{i}" for i in range(1, len(blocks) - 1)] + ["head_conv"]
    groups = resolution_groups(blocks, in_channels)
    stages = groups[1:] if groups[0] == 0 else groups
    full = list(range(1, len(blocks) - 2)) + [len(blocks) - 1]  # after each MBConv stage; the last takes the 1x1 conv

    def head(channels: int, classes: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(classifier[0].p), nn.Linear(channels, classes))

    final = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), *_not_inplace(_replace_last_linear(classifier, num_classes)))
    return Backbone(name, blocks, names, stages, head, final, full=full)


def efficientnet_b0(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    return efficientnet("efficientnet_b0", num_classes=num_classes, in_channels=in_channels, weights=weights)
