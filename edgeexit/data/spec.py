"""What a model's input looks like (`InputSpec`), the three splits a pipeline works on (`Splits`),
and the in-memory dataset the built-in datasets use (`TensorImages`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from edgeexit.errors import ConfigError


@dataclass(frozen=True)
class InputSpec:
    """The input a model expects, as recorded in a bundle's manifest.

    Pixel values are first scaled to [0, 1], then normalised per channel: (x - mean) / std.
    Every dataset item is already normalised; `normalize` applies the same to raw [0, 1] images.
    """

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # Lists coming from JSON become tuples, so that specs compare and hash as values.
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        for name in ("mean", "std"):
            try:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"input spec: {name} must be numbers", got=getattr(self, name)) from e
        for name in ("channels", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"input spec: {name} must be a positive integer", got=value)
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.channels:
                raise ConfigError(
                    f"input spec: {name} needs one value per channel",
                    got=values,
                    expected=f"{self.channels} values",
                )
        if any(s <= 0 for s in self.std):
            raise ConfigError("input spec: std must be > 0", got=self.std)
        if len(self.class_names) < 2:
            raise ConfigError("input spec: a classifier needs at least 2 classes", got=self.class_names)
        if self.dtype != "float32":
            raise ConfigError("input spec: unsupported dtype", got=self.dtype, expected="float32")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one sample."""
        return (self.channels, self.height, self.width)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Normalise raw images in [0, 1], shaped [N, C, H, W] or [C, H, W]."""
        view = (-1, 1, 1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(view)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(view)
        return (images - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (lists, not tuples)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """Inverse of `to_dict`; a missing or unknown key is a ConfigError."""
        fields = {"channels", "height", "width", "mean", "std", "class_names", "dtype"}
        missing = fields - {"dtype"} - set(d)
        unknown = set(d) - fields
        if missing or unknown:
            raise ConfigError(
                "input spec: wrong keys",
                got=sorted(d),
                expected=sorted(fields),
                hint=f"missing {sorted(missing)}, unknown {sorted(unknown)}",
            )
        return cls(**d)


class TensorImages(TensorDataset):
    """Normalised images and labels held in memory; items are (float32 [C, H, W], int64 label).

    `images` and `labels` can be sliced directly for fast CPU training without a DataLoader.
    `source_index[i]` is the index of sample i in the file or set it came from, so that splits
    can be checked for overlap.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, source_index: torch.Tensor | None = None):
        super().__init__(images, labels)
        self.source_index = torch.arange(len(labels)) if source_index is None else source_index

    @property
    def images(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors[1]


@dataclass
class Splits:
    """Train, validation and test datasets of one dataset, with the input spec they share.

    Each dataset works with torch's DataLoader; items are (float32 [C, H, W] normalised, int64 label).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    spec: InputSpec
    name: str = ""

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
