"""Per-exit outputs of a whole split, cached from one pass of the model (calibration and pruning work on these)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from edgeexit.data.batches import batches
from edgeexit.errors import DatasetError
from edgeexit.models import EarlyExitNet


@dataclass
class ExitOutputs:
    logits: np.ndarray  # [E, N, C] float32
    labels: np.ndarray  # [N] int64
    confidences: np.ndarray | None  # [E, N] EENet h, or None

    def subset(self, idx: np.ndarray) -> "ExitOutputs":
        """The outputs of the samples at `idx` (a calibration recipe's draw)."""
        return ExitOutputs(self.logits[:, idx], self.labels[idx], None if self.confidences is None else self.confidences[:, idx])

    @property
    def exit_accuracy(self) -> list[float]:
        return (self.logits.argmax(-1) == self.labels[None]).mean(1).tolist()


@torch.no_grad()
def collect_outputs(net: EarlyExitNet, dataset: Dataset, *, batch_size: int = 256, limit: int | None = None) -> ExitOutputs:
    net.eval()
    logits, confs, labels, n = [], [], [], 0
    for x, y in batches(dataset, batch_size, shuffle=False):
        if limit is not None and n >= limit:
            break
        if limit is not None:
            x, y = x[: limit - n], y[: limit - n]
        outs, conf = net.forward_exits(x)
        logits.append(torch.stack(outs).numpy())
        if conf is not None:
            confs.append(torch.stack(conf).numpy())
        labels.append(y.numpy())
        n += len(y)
    if n == 0:
        raise DatasetError("no samples to compute exit outputs on", got="an empty split", expected=">= 1 sample",
                           hint="check the dataset limits and the calibration recipe")
    return ExitOutputs(np.concatenate(logits, 1).astype(np.float32), np.concatenate(labels).astype(np.int64),
                       np.concatenate(confs, 1).astype(np.float32) if confs else None)


def dataset_arrays(dataset: Dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of a split as contiguous float32 / int64 numpy arrays (for runtimes)."""
    xs, ys, n = [], [], 0
    for x, y in batches(dataset, 512, shuffle=False):
        xs.append(x.numpy())
        ys.append(y.numpy())
        n += len(y)
        if limit is not None and n >= limit:
            break
    if n == 0 or (limit is not None and limit < 1):
        raise DatasetError("no samples to run", got=f"{n} samples, limit {limit}", expected=">= 1 sample",
                           hint="check the split and --limit")
    x, y = np.concatenate(xs), np.concatenate(ys)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)
