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
    (edgeexit.bundle.manifest.Manifest) expects its input: training's conversion, resize and normalisation."""
    import torch
    from torchvision import transforms

    from edgeexit.data.folder import _ConvertMode
    from edgeexit.data.in_memory import to_normalised_float

    info = manifest.input
    channels, height, width = info.shape
    if channels not in (1, 3):
        raise DatasetError("image files give 1 or 3 channels", got=f"a bundle input of {channels} channels",
                           expected="1 (grayscale) or 3 (RGB)", hint="feed this bundle arrays, not image files")
    to_mode = _ConvertMode("L" if channels == 1 else "RGB")
    rows = []
    for path in image_files(paths):
        image = to_mode(_open(path))
        if info.resize == "bilinear_antialias":  # image-folder training: PIL's resize, as load_image_folder does
            tensor = transforms.Compose([transforms.Resize((height, width)), transforms.ToTensor(),
                                         transforms.Normalize(info.mean, info.std)])(image)[None]
        else:  # in-memory training (fashion-mnist, cifar): uint8 -> [0, 1] -> bilinear without antialias
            if height != width:
                raise DatasetError("the in-memory resize makes square images", got=info.shape,
                                   expected="an input of equal height and width")
            pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
            pixels = pixels[None, None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)[None]
            tensor = to_normalised_float(pixels, image_size=height, mean=info.mean, std=info.std)
        rows.append(tensor.numpy().astype(np.float32, copy=False))
    return np.concatenate(rows)
