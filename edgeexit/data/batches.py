"""Batches of a split in order or shuffled: what training, calibration and the runtimes iterate over."""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from edgeexit.data.spec import TensorImages


def batches(dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of (images, labels); in-memory datasets are sliced directly (much faster than a DataLoader)."""
    if isinstance(dataset, TensorImages):
        n = len(dataset)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield dataset.images[idx], dataset.labels[idx]
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)
