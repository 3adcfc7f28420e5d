"""MSDNet's exit classifier: the head the strongest early-exit training recipes put on their exits; edgeexit's default.

Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification" (ICLR 2018), Sec. 4: every
classifier "consists of two convolutional layers, followed by one 2x2 average pooling layer and one linear layer";
the reference code (`build_classifier_cifar`, kalviny/MSDNet) makes both convolutions 3x3 with stride 2, each
followed by BatchNorm and ReLU, 128 channels wide. Li et al. ("Improved Techniques for Training Adaptive Deep
Networks", ICCV 2019), whose gradient equilibrium and distillation `edgeexit.train.distill` implements, train their
exits with this head. AEP's head (papers/000: the backbone's own classifier, global average pooling and one linear
layer) reads an early stage's features linearly.

    head(x) = W flatten(avgpool(relu(bn(conv_2(relu(bn(conv_1(x))))))))   conv_i: 3x3, stride 2, C/2 channels

Two departures, both measured (issue 19, `tools/reproduce/distill.py --heads`), on the default build (Fashion-MNIST
ResNet-18 at 32 px, 3 epochs, seed 0; test accuracy of exits layer1.1 / layer2.1 / layer3.1 / final):
- width C/2 (C: the exit's channels), not 128. At 128 the first exit (64 x 8 x 8 maps) costs 1.77 M MACs, 5 % of
  the network's 35.4 M, and no exit is left below 30 % of the MACs (exit accuracy 91.2 91.6 91.6 91.6); at C/2 it
  costs 0.33 M and sits at 29.9 % (90.7 91.6 91.6 91.6, against AEP's head: 88.2 91.2 91.2 91.2); at 30 % of the
  MACs 90.8 % against AEP's 89.3 %, the full model 91.60 % against 91.24 %.
- adaptive average pooling: MSDNet's 2x2 pool assumes the 2x2 maps its CIFAR exits produce; here an exit's maps may
  be 1x1 to 8x8.
"""

from __future__ import annotations

from torch import nn

from edgeexit.errors import ConfigError


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def msdnet_head(shape: tuple[int, ...], num_classes: int, width: int | None = None) -> nn.Module:
    """The classifier for an exit whose features have `shape` (C, H, W); `width` channels in both convolutions
    (default: C / 2)."""
    if len(shape) != 3:
        raise ConfigError("MSDNet's classifier needs feature maps at the exit", got=f"features of shape {tuple(shape)}",
                          expected="(C, H, W)", hint="a transformer's exits take the class-token head (--head aep)")
    channels = shape[0]
    width = width or max(1, channels // 2)
    return nn.Sequential(*conv_bn_relu(channels, width), *conv_bn_relu(width, width), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(1), nn.Linear(width, num_classes))
