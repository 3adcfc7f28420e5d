"""Image files in, the bundle's input out: float32 [N, C, H, W], preprocessed as training did.

The steps are training's own (edgeexit/data): the image converted to grayscale ("L") or RGB for the manifest's
channels, resized to its (H, W) by the method it records (`input.resize`), scaled to [0, 1], normalised per
channel with its mean and std. Nothing here trusts a file: one that is not an image is a DatasetError.

    from edgeexit.bundle import load_bundle
    from edgeexit.images import load_images
    x = load_images(["cat.png"], load_bundle("runs/default/bundle").manifest)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeexit.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Each path as given, and every image file (by suffix, sorted) of each folder among them."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DatasetError("no image files in the folder", got=str(p),
                                   expected=f"files ending in {', '.join(IMAGE_SUFFIXES)}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError("image not found", got=str(p), expected="an image file or a folder of them")
    if not files:
        raise DatasetError("no images given", got=[str(p) for p in paths], expected="image files or folders")
    return files


def _open(path: Path):
    """The decoded image, or a DatasetError: PIL only decodes pixels, it runs nothing from the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise DatasetError("not an image edgeexit can read", got=f"{path}: {type(e).__name__}: {e}",
                           expected=f"a PNG, JPEG or other image file ({', '.join(IMAGE_SUFFIXES)})") from e


def load_images(paths: Sequence[str | Path], manifest) -> np.ndarray:
    """float32 [N, C, H, W] of the image files (and folders of them) in `paths`, as the bundle's `manifest`
    (edgeexit.bundle.manifest.Manifest) expects its input: training's conversion, resize and normalisation.

    numpy and PIL only (no torch): a runtime-only install predicts on images too. The steps are those of
    torchvision's Resize + ToTensor + Normalize on a PIL image (image folders) and of
    edgeexit.data.in_memory.to_normalised_float (in-memory data sets); tests/test_cli_ux.py holds them equal."""
    info = manifest.input
    channels, height, width = info.shape
    if channels not in (1, 3):
        raise DatasetError("image files give 1 or 3 channels", got=f"a bundle input of {channels} channels",
                           expected="1 (grayscale) or 3 (RGB)", hint="feed this bundle arrays, not image files")
    if info.resize != "bilinear_antialias" and height != width:
        raise DatasetError("the in-memory resize makes square images", got=info.shape,
                           expected="an input of equal height and width")
    mode = "L" if channels == 1 else "RGB"
    mean = np.asarray(info.mean, dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(info.std, dtype=np.float32).reshape(-1, 1, 1)
    rows = []
    for path in image_files(paths):
        image = _open(path)
        image = image if image.mode == mode else image.convert(mode)
        if info.resize == "bilinear_antialias":  # image-folder training: PIL's resize, as torchvision's Resize does
            from PIL import Image

            image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.uint8)
        x = (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)).astype(np.float32) / np.float32(255.0)
        if info.resize != "bilinear_antialias" and x.shape[1:] != (height, width):
            x = _bilinear(x, height, width)  # in-memory training: [0, 1] first, then bilinear without antialias
        rows.append(((x - mean) / std)[None])
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)


def _source_index(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of the upper) per output pixel: torch's bilinear with align_corners=False
    and no antialias (source = (i + 0.5) * in / out - 0.5, clamped at 0)."""
    src = np.maximum((np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * np.float32(size_in / size_out)
                     - np.float32(0.5), np.float32(0.0))
    lo = src.astype(np.int64)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def _bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [C, h, w] resized to [C, height, width] as torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False, antialias=False) does it (to ~1e-6)."""
    lo, hi, w = _source_index(x.shape[2], width)
    x = x[:, :, lo] * (np.float32(1.0) - w) + x[:, :, hi] * w
    lo, hi, w = _source_index(x.shape[1], height)
    w = w[:, None]
    return x[:, lo, :] * (np.float32(1.0) - w) + x[:, hi, :] * w
