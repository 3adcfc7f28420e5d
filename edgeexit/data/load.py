"""`load_dataset`: one entry from a dataset name to its train / val / test splits."""

from __future__ import annotations

from pathlib import Path

from edgeexit.data.cifar import read_cifar
from edgeexit.data.fashion_mnist import read_fashion_mnist
from edgeexit.data.folder import load_image_folder
from edgeexit.data.in_memory import check_arguments, in_memory_splits
from edgeexit.data.spec import Splits
from edgeexit.data.synthetic import load_synthetic
from edgeexit.errors import ConfigError

DATASETS = ("fashion-mnist", "synthetic", "folder:/path", "cifar10:/path", "cifar100:/path")
_NEEDS_PATH = ("folder", "cifar10", "cifar100")


def _parse(name: str, root: str | Path | None) -> tuple[str, Path | None]:
    """("kind", path) from "kind" or "kind:/path"; the path in the name and `root` must agree."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("dataset name is empty", got=name, expected=" | ".join(DATASETS))
    kind, sep, path = name.strip().partition(":")
    kind = kind.lower()
    named = Path(path) if sep and path else None
    given = Path(root) if root is not None else None
    if named is not None and given is not None and named != given:
        raise ConfigError(f"dataset {name!r} names a path and root names another", got=str(given), expected=str(named))
    where = named or given
    known = ("fashion-mnist", "synthetic", *_NEEDS_PATH)
    if kind not in known:
        raise ConfigError("unknown dataset", got=name, expected=" | ".join(DATASETS))
    if kind in _NEEDS_PATH and where is None:
        raise ConfigError(f"dataset {kind} needs a path", got=name, expected=f"{kind}:/path/to/data, or root=")
    if kind == "synthetic" and where is not None:
        raise ConfigError("the synthetic dataset takes no path", got=name, expected="synthetic")
    return kind, where


def load_dataset(
    name: str,
    *,
    image_size: int = 32,
    root: str | Path | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    limit_train: int | None = None,
    limit_val: int | None = None,
    limit_test: int | None = None,
    channels: int | None = None,
) -> Splits:
    """Train / val / test splits and the input spec of a dataset, by name.

    - "fashion-mnist": Debian's idx files (root, or $EDGEEXIT_FASHION_MNIST, or
      /usr/share/datasets/fashion-mnist); 51,000 / 9,000 / 10,000 at the default val_fraction.
    - "synthetic": a learnable random task for tests (`limit_*` = samples generated; 3 channels
      unless `channels` says otherwise).
    - "folder:/path": an ImageFolder tree; when /path holds `train/` and `test/` folders those are
      used as the training and test sets, otherwise test images are drawn from /path as well.
    - "cifar10:/path", "cifar100:/path": torchvision's extracted CIFAR files (never downloaded).

    Validation is a seeded split of the training images; `limit_*` keeps the first n of a split.
    Items are (float32 [C, H, W] normalised, int64 label).
    """
    kind, where = _parse(name, root)
    check_arguments(image_size, val_fraction, (limit_train, limit_val, limit_test))
    limits = {"limit_train": limit_train, "limit_val": limit_val, "limit_test": limit_test}
    if kind == "synthetic":
        return load_synthetic(image_size=image_size, channels=channels or 3, seed=seed, **limits)
    if kind == "folder":
        train_dir, test_dir = where, None
        if (where / "train").is_dir() and (where / "test").is_dir():
            train_dir, test_dir = where / "train", where / "test"
        return load_image_folder(
            train_dir,
            image_size=image_size,
            val_fraction=val_fraction,
            test_dir=test_dir,
            seed=seed,
            channels=channels,
            **limits,
        )
    if kind == "fashion-mnist":
        source = read_fashion_mnist(where)
    else:
        if channels not in (None, 3):
            raise ConfigError(f"{kind} images have 3 channels", got=channels)
        source = read_cifar(kind, where)
    return in_memory_splits(
        source, image_size=image_size, val_fraction=val_fraction, seed=seed, channels=channels, **limits
    )
