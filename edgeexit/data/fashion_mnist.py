"""Fashion-MNIST read straight from Debian's `dataset-fashion-mnist` idx files (no download)."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from edgeexit.data.in_memory import ArraySource
from edgeexit.errors import DatasetError

ENV_VAR = "EDGEEXIT_FASHION_MNIST"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Of the 60,000 training images scaled to [0, 1].
MEAN, STD = (0.2860,), (0.3530,)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
INSTALL_HINT = (
    "as root run `apt-get update && apt-get install -y dataset-fashion-mnist`, "
    f"or put the four idx .gz files in a folder and set {ENV_VAR}=/that/folder"
)
_IDX_UBYTE = 0x08


def fashion_mnist_dir(root: str | Path | None = None) -> Path:
    """The folder holding the idx files: `root`, else $EDGEEXIT_FASHION_MNIST, else Debian's."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"Fashion-MNIST file {stem}.gz not found",
        got=str(folder),
        expected=f"{folder}/{stem}.gz",
        hint=INSTALL_HINT,
    )


def read_idx(path: str | Path, *, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx file (gzipped or not) with `ndim` dimensions.

    The magic number, the dimension count and the payload length are checked; any mismatch or a
    corrupt/truncated gzip stream is a DatasetError.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; truncation is an EOFError
        raise DatasetError(
            f"cannot read idx file {path}",
            got=f"{type(e).__name__}: {e}",
            hint="the file is corrupt or truncated; reinstall it (apt-get install --reinstall dataset-fashion-mnist)",
        ) from e

    expected_magic = (_IDX_UBYTE << 8) | ndim
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != expected_magic:
        raise DatasetError(
            f"{path} is not a {ndim}-d unsigned-byte idx file",
            got=None if magic is None else f"magic 0x{magic:08x}",
            expected=f"magic 0x{expected_magic:08x}",
        )
    if len(raw) < header:
        raise DatasetError(f"{path} has a truncated idx header", got=f"{len(raw)} bytes", expected=f">= {header}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    payload = int(np.prod(dims))
    if len(raw) - header != payload:
        raise DatasetError(
            f"{path} has the wrong size for its header",
            got=f"{len(raw) - header} data bytes",
            expected=f"{payload} bytes for shape {dims}",
            hint="the file is truncated or corrupt; reinstall it",
        )
    # Copy so the array is writable (torch.from_numpy warns on read-only buffers).
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_pair(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _find(folder, FILES[f"{split}_images"]), _find(folder, FILES[f"{split}_labels"])
    images, labels = read_idx(images_path, ndim=3), read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{images_path}: Fashion-MNIST images are 28x28", got=images.shape[1:], expected=(28, 28))
    if len(images) != len(labels):
        raise DatasetError(
            f"Fashion-MNIST {split}: image and label counts differ",
            got=f"{len(images)} images, {len(labels)} labels",
            expected="equal counts",
        )
    if len(labels) and labels.max() >= len(CLASSES):
        raise DatasetError(f"{labels_path}: label out of range", got=int(labels.max()), expected=f"< {len(CLASSES)}")
    return images[:, None], labels  # add the channel axis


def read_fashion_mnist(root: str | Path | None = None) -> ArraySource:
    """The four idx files of Fashion-MNIST as arrays, checked (see `fashion_mnist_dir` for where)."""
    folder = fashion_mnist_dir(root)
    if not folder.is_dir():
        raise DatasetError("Fashion-MNIST folder not found", got=str(folder), hint=INSTALL_HINT)
    train_images, train_labels = _read_pair(folder, "train")
    test_images, test_labels = _read_pair(folder, "test")
    return ArraySource("fashion-mnist", train_images, train_labels, test_images, test_labels, CLASSES, MEAN, STD)
