"""A user's own images in torchvision's ImageFolder layout: root/<class name>/<image files>."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder

from edgeexit.data.in_memory import check_arguments, check_fraction
from edgeexit.data.spec import InputSpec, Splits
from edgeexit.errors import ConfigError, DatasetError

LAYOUT = "root/<class name>/<image files> (.png, .jpg, ...), one folder per class"
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
# Channel detection looks at this many files, spread over the whole folder.
_DETECT_FILES = 32


def _open_image(path: str) -> Image.Image:
    """ImageFolder loader that keeps the file's own mode; the transform converts it."""
    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            image.load()
            return image
    except OSError as e:  # UnidentifiedImageError is an OSError
        raise DatasetError(f"cannot read image {path}", got=f"{type(e).__name__}: {e}") from e


class _ConvertMode:
    """Convert a PIL image to "L" or "RGB" (a class, not a lambda, so DataLoader workers can pickle it)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == self.mode else image.convert(self.mode)


def _as_int64(label: int) -> torch.Tensor:
    return torch.tensor(label, dtype=torch.int64)


def _image_folder(root: Path, role: str) -> ImageFolder:
    if not root.is_dir():
        raise DatasetError(f"image folder ({role}) not found", got=str(root), expected=LAYOUT)
    try:
        return ImageFolder(str(root), loader=_open_image, target_transform=_as_int64)
    except FileNotFoundError as e:  # no class folders, or no image files in them
        raise DatasetError(f"image folder ({role}) has no images", got=str(root), expected=LAYOUT, hint=str(e)) from e


def _detect_channels(paths: Sequence[str]) -> int:
    """1 when every sampled file is grayscale, else 3."""
    step = max(1, len(paths) // _DETECT_FILES)
    for path in paths[::step][:_DETECT_FILES]:
        try:
            with Image.open(path) as image:  # reads the header only
                mode = image.mode
        except OSError as e:
            raise DatasetError(f"cannot read image {path}", got=f"{type(e).__name__}: {e}") from e
        if mode not in _GRAY_MODES:
            return 3
    return 1


def _mean_std(
    dataset: ImageFolder, indices: np.ndarray, to_tensor: transforms.Compose
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the given images after resizing, pixels in [0, 1]."""
    total = total_sq = None
    count = 0
    for i in indices:
        image, _ = dataset[int(i)]
        x = to_tensor(image).double().flatten(1)
        total = x.sum(1) if total is None else total + x.sum(1)
        total_sq = (x * x).sum(1) if total_sq is None else total_sq + (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.tolist(), std.tolist()


def load_image_folder(
    root: str | Path,
    *,
    image_size: int = 32,
    val_fraction: float = 0.15,
    test_dir: str | Path | None = None,
    test_fraction: float = 0.15,
    seed: int = 0,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    stats_images: int = 1000,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
) -> Splits:
    """Splits of an ImageFolder tree; class names are the folder names, in sorted order.

    Validation (and, without `test_dir`, test) samples come from a seeded permutation of `root`'s
    images. Images are resized to image_size x image_size and normalised with `mean`/`std`, or with
    the mean/std of up to `stats_images` training images when neither is given. `channels` is 1
    (grayscale) or 3 (RGB); by default 1 when the files are all grayscale.
    """
    check_arguments(image_size, val_fraction, (limit_train, limit_val, limit_test))
    test_fraction = check_fraction("test_fraction", test_fraction) if test_dir is None else 0.0
    if channels not in (None, 1, 3):
        raise ConfigError("channels must be 1 (grayscale) or 3 (RGB)", got=channels)
    if isinstance(stats_images, bool) or not isinstance(stats_images, int) or stats_images < 1:
        raise ConfigError("stats_images must be a positive integer", got=stats_images)
    if (mean is None) != (std is None):
        raise ConfigError("give both mean and std, or neither", got={"mean": mean, "std": std})

    dataset = _image_folder(Path(root), "root")
    if len(dataset.classes) < 2:
        raise DatasetError("an image folder needs at least 2 class folders", got=dataset.classes, expected=LAYOUT)
    if channels is None:
        channels = _detect_channels([path for path, _ in dataset.samples])

    n = len(dataset)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DatasetError(
            "too few images to split",
            got=f"{n} images in {root}",
            expected=f"more than {n_val} validation + {n_test} test images",
        )
    perm = np.random.default_rng(seed).permutation(n)
    train_idx, test_idx, val_idx = perm[:n_train], perm[n_train : n_train + n_test], perm[n_train + n_test :]

    resize = [
        _ConvertMode("L" if channels == 1 else "RGB"),
        transforms.Resize((image_size, image_size)),
        transforms.ToTensor(),
    ]
    if mean is None:
        mean, std = _mean_std(dataset, train_idx[:stats_images], transforms.Compose(resize))
    spec = InputSpec(channels, image_size, image_size, mean=mean, std=std, class_names=dataset.classes)
    transform = transforms.Compose([*resize, transforms.Normalize(spec.mean, spec.std)])
    dataset.transform = transform

    if test_dir is None:
        test = Subset(dataset, test_idx[:limit_test].tolist())
    else:
        test_set = _image_folder(Path(test_dir), "test")
        if test_set.classes != dataset.classes:
            raise DatasetError(
                "test folder classes differ from the training folder's",
                got=test_set.classes,
                expected=dataset.classes,
            )
        test_set.transform = transform
        test = Subset(test_set, list(range(len(test_set)))[:limit_test])
    return Splits(
        train=Subset(dataset, train_idx[:limit_train].tolist()),
        val=Subset(dataset, val_idx[:limit_val].tolist()),
        test=test,
        spec=spec,
        name=f"folder:{root}",
    )
