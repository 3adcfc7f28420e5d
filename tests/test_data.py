"""Datasets: the real Debian Fashion-MNIST files, ImageFolder on PNGs written here, synthetic data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from edgeexit.data import (
    FASHION_MNIST_CLASSES,
    InputSpec,
    fashion_mnist_dir,
    load_dataset,
    load_image_folder,
    synthetic,
)
from edgeexit.errors import ConfigError, DatasetError

FMNIST = fashion_mnist_dir()
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not at {FMNIST} (apt-get install -y dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def fmnist():
    return load_dataset("fashion-mnist")


@needs_fmnist
def test_fashion_mnist_aep_split(fmnist):
    assert fmnist.sizes() == {"train": 51000, "val": 9000, "test": 10000}
    train, val = set(fmnist.train.source_index.tolist()), set(fmnist.val.source_index.tolist())
    assert not train & val
    assert train | val == set(range(60000))
    assert fmnist.spec == InputSpec(1, 32, 32, (0.2860,), (0.3530,), FASHION_MNIST_CLASSES)
    x, y = fmnist.test[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # Bilinear upsampling smooths a little, so the std lands near 0.96, not exactly 1.
    images = fmnist.train.images
    assert abs(images.mean().item()) < 0.02
    assert abs(images.std().item() - 1) < 0.06
    assert torch.bincount(fmnist.test.labels).tolist() == [1000] * 10


@needs_fmnist
def test_fashion_mnist_split_depends_on_seed_only(fmnist):
    limits = dict(limit_train=200, limit_val=100, limit_test=50, image_size=28)
    a, b = load_dataset("fashion-mnist", **limits), load_dataset("fashion-mnist", **limits)
    other = load_dataset("fashion-mnist", seed=1, **limits)
    assert a.sizes() == {"train": 200, "val": 100, "test": 50}
    assert torch.equal(a.train.source_index, fmnist.train.source_index[:200])  # limit = first n of the split
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.train.source_index, other.train.source_index)
    assert torch.equal(a.test.images, other.test.images)  # test is the file order, whatever the seed
    assert a.train.images.shape == (200, 1, 28, 28)


@needs_fmnist
def test_fashion_mnist_resize_and_three_channels():
    s = load_dataset("fashion-mnist", image_size=48, limit_train=8, limit_val=8, limit_test=8, channels=3)
    assert s.train.images.shape == (8, 3, 48, 48) and s.spec.shape == (3, 48, 48)
    assert s.spec.mean == (0.2860,) * 3
    assert torch.equal(s.train.images[:, 0], s.train.images[:, 2])


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEXIT_FASHION_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"apt-get update && apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    with pytest.raises(DatasetError, match="EDGEEXIT_FASHION_MNIST"):
        load_dataset("fashion-mnist", root=tmp_path)  # folder exists, files do not


def _fake_fmnist(folder: Path, n_train: int = 20, n_test: int = 10) -> None:
    """Tiny valid idx files in Fashion-MNIST's layout."""
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        header = (0x801).to_bytes(4, "big") + n.to_bytes(4, "big")
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes()))


def test_fake_idx_files_load(tmp_path):
    _fake_fmnist(tmp_path)
    s = load_dataset("fashion-mnist", root=tmp_path, val_fraction=0.25)
    assert s.sizes() == {"train": 15, "val": 5, "test": 10}


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: raw[: len(raw) // 2], "corrupt or truncated"),  # truncated gzip stream
        (lambda raw: b"not a gzip file at all", "corrupt or truncated"),
        (lambda raw: gzip.compress(gzip.decompress(raw)[:-3]), "wrong size"),  # valid gzip, short payload
        (lambda raw: gzip.compress(b"\x00\x00\x08\x03" + gzip.decompress(raw)[4:]), "not a 1-d"),  # bad magic
    ],
)
def test_corrupt_idx_file_is_a_dataset_error(tmp_path, damage, message):
    _fake_fmnist(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match=message):
        load_dataset("fashion-mnist", root=tmp_path)


@needs_fmnist
def test_truncated_copy_of_real_file(tmp_path):
    for f in FMNIST.glob("*.gz"):
        (tmp_path / f.name).symlink_to(f)
    victim = tmp_path / "train-labels-idx1-ubyte.gz"
    victim.unlink()
    victim.write_bytes((FMNIST / victim.name).read_bytes()[:10_000])
    with pytest.raises(DatasetError, match="train-labels"):
        load_dataset("fashion-mnist", root=tmp_path)


def _write_pngs(root: Path, classes: dict[str, tuple], n: int, mode: str = "RGB") -> None:
    for name, color in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            value = tuple(min(255, c + 3 * i) for c in color)
            Image.new(mode, (20, 12), value if mode == "RGB" else value[0]).save(root / name / f"{i}.png")


def test_image_folder_rgb(tmp_path):
    _write_pngs(tmp_path, {"cat": (200, 10, 10), "dog": (10, 10, 200), "owl": (10, 200, 10)}, n=10)
    s = load_image_folder(tmp_path, image_size=16, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert s.spec.class_names == ("cat", "dog", "owl") and s.spec.shape == (3, 16, 16)
    assert s.sizes() == {"train": 21, "val": 6, "test": 3}
    assert not set(s.train.indices) & set(s.val.indices) and not set(s.val.indices) & set(s.test.indices)
    x, y = next(iter(DataLoader(s.train, batch_size=64)))
    assert x.shape == (21, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    # mean/std were computed on the training images, so these are normalised
    assert x.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05


def test_image_folder_gray_with_test_dir_and_given_stats(tmp_path):
    _write_pngs(tmp_path / "train", {"a": (30,), "b": (220,)}, n=6, mode="L")
    _write_pngs(tmp_path / "test", {"a": (40,), "b": (210,)}, n=3, mode="L")
    s = load_dataset(f"folder:{tmp_path}", image_size=8, limit_train=4)  # train/ + test/ layout
    assert s.spec.channels == 1 and s.sizes() == {"train": 4, "val": 2, "test": 6}
    s = load_image_folder(tmp_path / "train", test_dir=tmp_path / "test", mean=[0.5], std=[0.25], image_size=8)
    x, y = s.test[0]
    assert x.shape == (1, 8, 8) and s.spec.mean == (0.5,)
    assert torch.allclose(x, torch.full_like(x, (40 / 255 - 0.5) / 0.25), atol=1e-5) and y == 0


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(tmp_path)  # exists but empty
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_image_folder(tmp_path)  # class folders without image files
    _write_pngs(tmp_path / "other", {"x": (1, 2, 3), "y": (4, 5, 6)}, n=2)
    with pytest.raises(DatasetError, match="too few"):
        load_image_folder(tmp_path / "other", val_fraction=0.5, test_fraction=0.5)


def test_synthetic_is_learnable():
    """A nearest-class-mean classifier fitted on train beats chance (10 %) clearly on test."""
    s = load_dataset("synthetic", image_size=16, limit_train=500, limit_test=500)
    x, y = s.train.images.flatten(1), s.train.labels
    means = torch.stack([x[y == k].mean(0) for k in range(10)])
    predicted = torch.cdist(s.test.images.flatten(1), means).argmin(1)
    assert (predicted == s.test.labels).float().mean() > 0.6
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


def test_synthetic_seeds():
    a, b = synthetic(32, channels=1, size=8, seed=3), synthetic(32, channels=1, size=8, seed=3)
    assert torch.equal(a.images, b.images) and a.images.shape == (32, 1, 8, 8)
    assert not torch.equal(a.images, synthetic(32, channels=1, size=8, seed=4).images)
    s = load_dataset("synthetic", channels=1, image_size=8)
    assert s.sizes() == {"train": 1024, "val": 256, "test": 256} and s.spec.channels == 1
    assert not torch.equal(s.train.images[:10], s.val.images[:10])


@pytest.mark.parametrize(
    "name, kwargs, error",
    [
        ("imagenet", {}, ConfigError),
        ("folder", {}, ConfigError),
        ("synthetic", {"image_size": 0}, ConfigError),
        ("synthetic", {"limit_train": -1}, ConfigError),
        ("fashion-mnist", {"val_fraction": 1.5, "root": "/nonexistent"}, ConfigError),
        ("fashion-mnist", {"root": "/nonexistent"}, DatasetError),
        ("folder:/nonexistent", {"limit_val": 2.5}, ConfigError),
        ("synthetic:/x", {}, ConfigError),
        ("cifar10:/nonexistent", {}, DatasetError),
    ],
)
def test_bad_dataset_arguments(name, kwargs, error):
    with pytest.raises(error):
        load_dataset(name, **kwargs)


def test_input_spec_round_trip_and_validation():
    spec = InputSpec(3, 8, 8, (0.1, 0.2, 0.3), (1, 2, 3), ("a", "b"))
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert torch.allclose(spec.normalize(torch.ones(3, 8, 8))[:, 0, 0], torch.tensor([0.9, 0.4, 0.7 / 3]))
    with pytest.raises(ConfigError, match="one value per channel"):
        InputSpec(3, 8, 8, (0.1,), (1,), ("a", "b"))
    with pytest.raises(ConfigError, match="wrong keys"):
        InputSpec.from_dict({"channels": 1})


def test_fashion_mnist_location_root_then_env(tmp_path, monkeypatch):
    _fake_fmnist(tmp_path / "env", n_train=10)
    _fake_fmnist(tmp_path / "arg", n_train=30)
    monkeypatch.setenv("EDGEEXIT_FASHION_MNIST", str(tmp_path / "env"))
    assert len(load_dataset("fashion-mnist", val_fraction=0.1).train) == 9
    assert len(load_dataset("fashion-mnist", root=tmp_path / "arg", val_fraction=0.1).train) == 27


def test_cifar10_from_disk(tmp_path, monkeypatch):
    """Tiny pickles in torchvision's CIFAR-10 layout; only the md5 checks are patched out."""
    import pickle

    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 4) for i in range(1, 6)), ("test_batch", 6)]:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    s = load_dataset(f"cifar10:{tmp_path}", image_size=16, val_fraction=0.25)
    assert s.sizes() == {"train": 15, "val": 5, "test": 6}
    assert s.spec.class_names == tuple(names) and s.train.images.shape == (15, 3, 16, 16)
