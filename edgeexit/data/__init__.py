"""Datasets: Fashion-MNIST from Debian's files, a user's ImageFolder, CIFAR on disk, and a
synthetic task for tests, all as train / val / test splits with the model's input spec."""

from edgeexit.data.cifar import read_cifar
from edgeexit.data.fashion_mnist import CLASSES as FASHION_MNIST_CLASSES
from edgeexit.data.fashion_mnist import fashion_mnist_dir, read_fashion_mnist, read_idx
from edgeexit.data.folder import load_image_folder
from edgeexit.data.in_memory import ArraySource, in_memory_splits
from edgeexit.data.load import DATASETS, load_dataset
from edgeexit.data.spec import InputSpec, Splits, TensorImages
from edgeexit.data.synthetic import load_synthetic, synthetic, synthetic_spec

__all__ = [
    "ArraySource",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "InputSpec",
    "Splits",
    "TensorImages",
    "fashion_mnist_dir",
    "load_dataset",
    "in_memory_splits",
    "load_image_folder",
    "load_synthetic",
    "read_cifar",
    "read_fashion_mnist",
    "read_idx",
    "synthetic",
    "synthetic_spec",
]
