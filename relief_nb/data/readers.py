"""Readers of the published formats: MNIST's IDX files (raw or ``.gz``), the CIFAR-10 / CIFAR-100 python
pickles, and Tiny-ImageNet's folders (decoded once and cached as ``tiny-imagenet-200/decoded_uint8.npz``)."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .dataset import IMAGENET_MEAN, IMAGENET_STD, Dataset, missing_data

__all__ = ["MNIST_FILES", "load_cifar", "load_idx_folder", "load_tiny_imagenet", "read_idx"]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed): magic 0x00 0x00 <dtype> <ndim>, big-endian dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    dtype = np.dtype(dtypes[data[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(data)} bytes, the header promises {expected}")
    return np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)


MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def load_idx_folder(folder: Path, name: str, num_classes: int = 10) -> Dataset:
    """Any data set in MNIST's IDX layout (train/t10k images and labels) from ``folder``."""
    arrays = {}
    for stem in MNIST_FILES:
        path = _find_idx(folder, stem)
        if path is None:
            raise missing_data(name, folder)
        arrays[stem] = read_idx(path)
    images = {k: torch.from_numpy(v.copy()).unsqueeze(1) for k, v in arrays.items() if "images" in k}
    labels = {k: torch.from_numpy(v.astype(np.int64)) for k, v in arrays.items() if "labels" in k}
    return Dataset(name, images["train-images-idx3-ubyte"], labels["train-labels-idx1-ubyte"],
                   images["t10k-images-idx3-ubyte"], labels["t10k-labels-idx1-ubyte"], num_classes)


def load_cifar(root: Path, classes: int) -> Dataset:
    name = f"cifar{classes}"
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    files = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if classes == 10 else (["train"], ["test"])
    label_key = b"labels" if classes == 10 else b"fine_labels"

    def read(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for n in names:
            path = folder / n
            if not path.exists():
                raise missing_data(name, folder)
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry[label_key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = read(files[0])
    test_x, test_y = read(files[1])
    return Dataset(name, train_x, train_y, test_x, test_y, classes, IMAGENET_MEAN, IMAGENET_STD, crop_padding=4)


def load_tiny_imagenet(root: Path) -> Dataset:
    from PIL import Image  # pillow is a core dependency; imported here since only this reader needs it

    folder = root / "tiny-imagenet-200"
    if not (folder / "wnids.txt").exists():
        raise missing_data("tiny-imagenet", folder)
    cache = folder / "decoded_uint8.npz"
    if cache.exists():
        with np.load(cache) as z:
            arrays = {k: torch.from_numpy(z[k]) for k in z.files}
    else:
        wnids = (folder / "wnids.txt").read_text().split()
        index = {w: i for i, w in enumerate(wnids)}

        def decode(paths: list[Path]) -> np.ndarray:
            out = np.empty((len(paths), 3, 64, 64), dtype=np.uint8)
            for i, p in enumerate(paths):  # decoding is per file by nature; done once, then cached
                with Image.open(p) as im:
                    out[i] = np.asarray(im.convert("RGB").resize((64, 64))).transpose(2, 0, 1)
            return out

        train_paths, train_labels = [], []
        for w in wnids:
            files = sorted((folder / "train" / w / "images").glob("*.JPEG"))
            train_paths += files
            train_labels += [index[w]] * len(files)
        val_paths, val_labels = [], []
        for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                val_paths.append(folder / "val" / "images" / parts[0])
                val_labels.append(index[parts[1]])
        arrays = {
            "train_x": torch.from_numpy(decode(train_paths)), "train_y": torch.tensor(train_labels),
            "test_x": torch.from_numpy(decode(val_paths)), "test_y": torch.tensor(val_labels),
        }
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: v.numpy() for k, v in arrays.items()})
        os.replace(tmp, cache)
    return Dataset("tiny-imagenet", arrays["train_x"], arrays["train_y"].long(), arrays["test_x"],
                   arrays["test_y"].long(), 200, IMAGENET_MEAN, IMAGENET_STD, crop_padding=8)
