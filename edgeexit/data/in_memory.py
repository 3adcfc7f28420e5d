"""Splits of datasets read whole into memory (Fashion-MNIST, CIFAR): a seeded split, per-split
limits, then one resize + normalisation pass so that training never resizes again."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from edgeexit.data.spec import InputSpec, Splits, TensorImages
from edgeexit.errors import ConfigError

# Bounds the float32 copies made while resizing, whatever the image size.
_CHUNK_BYTES = 16 << 20


def check_image_size(image_size: object) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError("image_size must be a positive integer", got=image_size, expected="e.g. 32")
    return image_size


def check_limit(name: str, limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        # 0 samples would train nothing and still write a checkpoint (an untrained one, exit code 0)
        raise ConfigError(f"{name} must be an integer >= 1, or no limit", got=limit, expected="e.g. 256",
                          hint="leave the option out to use the whole split")
    return limit


def check_fraction(name: str, fraction: object) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"{name} must be a number in [0, 1)", got=fraction, expected="e.g. 0.15")
    return float(fraction)


def check_arguments(image_size: object, val_fraction: object, limits: tuple[object, object, object]) -> None:
    """ConfigError for a bad size, fraction or (train, val, test) limit, before any file is read."""
    check_image_size(image_size)
    check_fraction("val_fraction", val_fraction)
    for split, limit in zip(("train", "val", "test"), limits):
        check_limit(f"limit_{split}", limit)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of a seeded permutation of range(n); the same on every machine.

    The last round(n * val_fraction) positions of the permutation are the validation set
    (60,000 Fashion-MNIST images at 0.15 give AEP's 51,000 / 9,000).
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return perm[: n - n_val], perm[n - n_val :]


def to_normalised_float(
    images: torch.Tensor,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    channels: int | None = None,
) -> torch.Tensor:
    """uint8 [N, C, H, W] → float32 [N, channels, image_size, image_size], scaled to [0, 1],
    resized (bilinear, no antialias) and normalised, in chunks to bound the memory used.

    A 1-channel source asked for 3 channels is repeated (for 3-channel backbones); `mean` and
    `std` are per output channel.
    """
    n, c_in, h, w = images.shape
    c_out = c_in if channels is None else channels
    if c_out != c_in and not (c_in == 1 and c_out == 3):
        raise ConfigError(f"cannot make {c_out}-channel images from {c_in}-channel ones", got=c_out, expected=c_in)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    out = torch.empty((n, c_out, image_size, image_size), dtype=torch.float32)
    chunk = max(1, _CHUNK_BYTES // (4 * c_out * max(h * w, image_size * image_size)))
    for start in range(0, n, chunk):
        x = images[start : start + chunk].float().div_(255.0)
        if (h, w) != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=False)
        out[start : start + chunk] = (x - mean_t) / std_t  # broadcasting repeats 1 → 3 channels
    return out


@dataclass(frozen=True)
class ArraySource:
    """A dataset read whole into memory: uint8 [N, C, H, W] images, integer labels, and the
    per-channel mean/std of its training images (pixels in [0, 1])."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


def in_memory_splits(
    source: ArraySource,
    *,
    image_size: int,
    val_fraction: float,
    seed: int,
    limit_train: int | None,
    limit_val: int | None,
    limit_test: int | None,
    channels: int | None = None,
) -> Splits:
    """Splits of an array source: train/val from a seeded permutation of the training images, test
    in file order; each split cut to its first `limit_*` samples before resizing.
    `channels=3` on a 1-channel source repeats the gray channel."""
    check_arguments(image_size, val_fraction, (limit_train, limit_val, limit_test))
    mean, std = source.mean, source.std
    c_out = source.train_images.shape[1] if channels is None else channels
    if len(mean) == 1 and c_out == 3:
        mean, std = mean * 3, std * 3

    train_idx, val_idx = split_indices(len(source.train_labels), val_fraction, seed)
    test_idx = np.arange(len(source.test_labels))
    parts = []
    for idx, limit, images, labels in (
        (train_idx, limit_train, source.train_images, source.train_labels),
        (val_idx, limit_val, source.train_images, source.train_labels),
        (test_idx, limit_test, source.test_images, source.test_labels),
    ):
        idx = idx[:limit]
        x = to_normalised_float(
            torch.from_numpy(np.ascontiguousarray(images[idx])),
            image_size=image_size,
            mean=mean,
            std=std,
            channels=channels,
        )
        y = torch.from_numpy(labels[idx].astype(np.int64))
        parts.append(TensorImages(x, y, torch.from_numpy(idx.astype(np.int64))))

    spec = InputSpec(c_out, image_size, image_size, mean=mean, std=std, class_names=source.class_names)
    return Splits(train=parts[0], val=parts[1], test=parts[2], spec=spec, name=source.name)
