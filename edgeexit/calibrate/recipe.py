"""Calibration-set recipes (`edgeexit/presets/recipes/*.toml`): which split, how many samples, which seed.

The same recipe picks the samples for threshold calibration and for INT8 calibration, so both see
the same data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeexit.calibrate.budget import load_preset
from edgeexit.errors import ConfigError, DatasetError


@dataclass(frozen=True)
class Recipe:
    """`samples` = None means every sample of `split`; otherwise a seeded random subset of that size."""

    split: str = "val"
    samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.split, str) or not self.split:
            raise ConfigError("a recipe's split must be a split name", got=repr(self.split), expected='e.g. "val"')
        if self.samples is not None and (isinstance(self.samples, bool) or not isinstance(self.samples, int)
                                         or self.samples <= 0):
            raise ConfigError("a recipe's samples must be a positive integer or \"all\"", got=repr(self.samples))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError("a recipe's seed must be an integer", got=repr(self.seed))

    def indices(self, n_available: int) -> np.ndarray:
        """Return the sorted indices of the samples to use out of a split of `n_available`."""
        if n_available <= 0:
            raise DatasetError(f"split {self.split!r} is empty", got=n_available, expected="at least one sample")
        if self.samples is None:
            return np.arange(n_available)
        if self.samples > n_available:
            raise DatasetError(f"the recipe asks for more samples than split {self.split!r} holds",
                               got=self.samples, expected=f"<= {n_available}",
                               hint='use the "default" recipe (all samples) or lower samples')
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(n_available, size=self.samples, replace=False))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["samples"] = "all" if self.samples is None else self.samples
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        unknown = set(data) - {"split", "samples", "seed"}
        if unknown:
            raise ConfigError("unknown keys in a recipe", got=sorted(unknown), expected="split, samples, seed")
        samples = data.get("samples", "all")
        return cls(split=data.get("split", "val"), samples=None if samples == "all" else samples,
                   seed=data.get("seed", 0))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load a recipe preset by name (e.g. "default", "quick"; see `presets_dir("recipes")`) or a path."""
    return load_preset("recipes", name_or_path, Recipe.from_dict)
