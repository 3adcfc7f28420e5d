"""CIFAR-10 / CIFAR-100 from files already on disk (torchvision's python-pickle layout; never downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from edgeexit.data.in_memory import ArraySource
from edgeexit.errors import DatasetError

# Per-channel mean/std of each training set, pixels in [0, 1].
_SETS = {
    "cifar10": (CIFAR10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": (CIFAR100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def read_cifar(name: str, root: str | Path) -> ArraySource:
    """The 50,000 training and 10,000 test images of "cifar10" or "cifar100" under `root`."""
    cls, mean, std = _SETS[name]
    try:
        train, test = cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise DatasetError(
            f"{name} not found or corrupted",
            got=str(root),
            expected=f"{root}/{cls.base_folder}/ as extracted from {cls.filename}",
            hint=f"download and extract {cls.url} yourself; edgeexit never downloads",
        ) from e
    return ArraySource(
        name,
        train.data.transpose(0, 3, 1, 2),  # NHWC → NCHW
        np.asarray(train.targets),
        test.data.transpose(0, 3, 1, 2),
        np.asarray(test.targets),
        tuple(train.classes),
        mean,
        std,
    )
