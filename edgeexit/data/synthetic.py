"""A learnable synthetic dataset for tests: each class is a fixed smooth pattern, each sample is
its class pattern plus Gaussian noise, so a tiny CNN gets well above chance in a few steps."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgeexit.data.in_memory import check_image_size, check_limit
from edgeexit.data.spec import InputSpec, Splits, TensorImages
from edgeexit.errors import ConfigError

# Sizes of load_dataset("synthetic") when no limit is given.
DEFAULT_SIZES = {"train": 1024, "val": 256, "test": 256}


def _patterns(channels: int, size: int, num_classes: int, pattern_seed: int) -> torch.Tensor:
    """One smooth unit-variance pattern per class: random 4x4 noise upsampled to size x size."""
    g = torch.Generator().manual_seed(pattern_seed)
    coarse = torch.randn((num_classes, channels, 4, 4), generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return smooth / smooth.flatten(1).std(dim=1).view(-1, 1, 1, 1)


def synthetic(
    n: int,
    *,
    channels: int = 3,
    size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    noise: float = 1.0,
    pattern_seed: int = 0,
) -> TensorImages:
    """`n` samples of `num_classes` learnable classes, roughly zero mean and unit variance.

    The class patterns depend only on (channels, size, num_classes, pattern_seed), so datasets
    made with different `seed`s are different samples of the same task.
    """
    for name, value, minimum in (("n", n, 0), ("channels", channels, 1), ("num_classes", num_classes, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"synthetic: {name} must be an integer >= {minimum}", got=value)
    size = check_image_size(size)
    patterns = _patterns(channels, size, num_classes, pattern_seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(num_classes, (n,), generator=g, dtype=torch.int64)
    images = patterns[labels] + noise * torch.randn((n, channels, size, size), generator=g)
    images /= (1.0 + noise**2) ** 0.5
    return TensorImages(images, labels)


def synthetic_spec(*, channels: int = 3, size: int = 32, num_classes: int = 10) -> InputSpec:
    """The input spec of `synthetic` data: already normalised, so mean 0 and std 1."""
    return InputSpec(
        channels=channels,
        height=size,
        width=size,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        class_names=tuple(f"class_{i}" for i in range(num_classes)),
    )


def load_synthetic(
    *,
    image_size: int = 32,
    channels: int = 3,
    num_classes: int = 10,
    seed: int = 0,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
) -> Splits:
    """Three synthetic splits of one task; `limit_*` is the number of samples generated
    (default: DEFAULT_SIZES)."""
    splits = {}
    for k, (split, limit) in enumerate((("train", limit_train), ("val", limit_val), ("test", limit_test))):
        n = check_limit(f"limit_{split}", limit)
        split_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        splits[split] = synthetic(
            DEFAULT_SIZES[split] if n is None else n,
            channels=channels,
            size=image_size,
            num_classes=num_classes,
            seed=split_seed,
            pattern_seed=seed,
        )
    spec = synthetic_spec(channels=channels, size=image_size, num_classes=num_classes)
    return Splits(**splits, spec=spec, name="synthetic")
