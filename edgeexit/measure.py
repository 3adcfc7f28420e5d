"""Wall-time measurement of two runtimes side by side in one process: interleaved, warmed up, medians.

This machine is noisy, so what we report are ratios of times taken alternately on the same batches,
never an absolute time on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeexit.errors import DatasetError


@dataclass
class SideBySide:
    batch_size: int
    images: int  # how many images the timed batches held
    seconds: dict[str, list[float]]  # per runtime: one time per batch (the median of `repeats` runs)

    def total(self, name: str) -> float:
        return float(np.sum(self.seconds[name]))

    def ratio(self, name: str, reference: str) -> float:
        """Total time of `name` over total time of `reference`, on the same batches."""
        return self.total(name) / self.total(reference)

    def per_image_ms(self, name: str) -> float:
        return 1e3 * self.total(name) / self.images



def side_by_side(runs: dict[str, Callable[[np.ndarray], object]], x: np.ndarray, batch_size: int, *,
                 repeats: int = 3, warmup: int = 3, max_batches: int | None = None) -> SideBySide:
    """Time every runtime on every batch of `x`, alternating runtimes batch by batch."""
    chunks = [x[i:i + batch_size] for i in range(0, len(x) - batch_size + 1, batch_size)] or [x]  # fewer than a batch: time what there is
    if len(x) == 0:
        raise DatasetError("nothing to time", got="0 samples", expected=">= 1 sample", hint="raise --limit")
    if max_batches is not None:
        chunks = chunks[:max_batches]
    for fn in runs.values():
        for c in chunks[:warmup]:
            fn(c)
    seconds: dict[str, list[float]] = {k: [] for k in runs}
    for c in chunks:
        for name, fn in runs.items():
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn(c)
                times.append(time.perf_counter() - t)
            seconds[name].append(float(np.median(times)))
    return SideBySide(batch_size, sum(len(c) for c in chunks), seconds)
