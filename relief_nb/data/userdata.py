"""Your own data: tensors, a ``torch.utils.data.Dataset`` or a folder, turned into a :class:`~relief_nb.data.Dataset`
that experiments, sweeps and notebooks take like the registered ones; and the fingerprint that makes the data part
of a run's identity.

Accepted by :func:`as_dataset` (and by ``Run(config, data=...)``, ``relief-nb run --data``):

* a :class:`~relief_nb.data.Dataset`;
* tensors ``(train_x, train_y, test_x, test_y)`` (a tuple or a dict with those keys): images ``(N, C, H, W)``
  or ``(N, H, W)`` as uint8 pixels (scaled by 1/255) or floats (used as they are), any ``(N, features)`` float
  inputs, integer token ids ``(N, T)`` (int64 / int32, kept as ids for an embedding table); with
  ``inputs="as_is"`` float inputs keep their shape (sequences ``(N, C, L)`` are not taken for ``(N, H, W)``
  images); integer labels in ``[0, num_classes)``;
* a file ``.pt`` (``torch.save`` of such a dict, which may also hold ``"inputs": "as_is"``) or ``.npz`` (numpy
  arrays under those keys);
* a pair ``(train, test)`` of ``torch.utils.data.Dataset`` returning ``(input, label)``;
* a folder: MNIST's IDX layout (``train-images-idx3-ubyte[.gz]`` and the three others), or class folders
  ``train/<class>/*.png|jpg`` and ``test/<class>/*.png|jpg`` (ImageFolder-style; classes sorted by name,
  every image resized to the first one's size).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .dataset import Dataset
from .readers import MNIST_FILES, _find_idx, load_idx_folder

__all__ = ["IMAGE_SUFFIXES", "as_dataset", "data_fingerprint", "hash_tensor", "load_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_KEYS = ("train_x", "train_y", "test_x", "test_y")


def as_dataset(data: Any, name: str = "custom", num_classes: int | None = None, inputs: str = "auto") -> Dataset:
    """``data`` in any accepted form (module docstring) as a validated :class:`Dataset` named ``name``.

    ``num_classes`` defaults to the largest label + 1. ``inputs="as_is"`` keeps float inputs' shape (``"auto"``
    reads 3-D ones as single-channel images). Errors name what is wrong and how to fix it."""
    if inputs not in ("auto", "as_is"):
        raise ValueError(f"inputs must be 'auto' or 'as_is', got {inputs!r}")
    if isinstance(data, Dataset):
        return _validated(data)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.suffix in (".pt", ".pth", ".npz"):
            return _from_file(path, name, num_classes, inputs)
        return _from_folder(path, name, num_classes)
    if isinstance(data, Mapping):
        missing = [k for k in _KEYS if k not in data]
        if missing:
            raise ValueError(f"data as a dict needs the keys {_KEYS}; missing {missing}")
        inputs = data.get("inputs", inputs)
        data = tuple(data[k] for k in _KEYS)
    if isinstance(data, Sequence) and len(data) == 2 and all(isinstance(d, torch.utils.data.Dataset) for d in data):
        train_x, train_y = _materialize(data[0], "train")
        test_x, test_y = _materialize(data[1], "test")
        data = (train_x, train_y, test_x, test_y)
    if isinstance(data, Sequence) and len(data) == 4:
        tensors = [torch.as_tensor(t) for t in data]
        return _from_tensors(*tensors, name=name, num_classes=num_classes, inputs=inputs)
    raise TypeError("data must be a relief_nb Dataset, tensors (train_x, train_y, test_x, test_y), a pair of "
                    f"torch Datasets (train, test) or a folder (IDX or class folders); got {type(data).__name__}")


def _images(x: torch.Tensor, what: str, inputs: str = "auto") -> torch.Tensor:
    """Inputs as the data set keeps them: uint8 pixels, float32 values, or int64 token ids."""
    if x.dtype == torch.uint8:
        return x.unsqueeze(1) if x.ndim == 3 else x
    if x.is_floating_point():
        x = x.to(torch.float32)
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} contains NaN or infinite values")
        return x.unsqueeze(1) if x.ndim == 3 and inputs == "auto" else x
    if x.dtype in (torch.int64, torch.int32, torch.int16, torch.int8):
        if x.ndim != 2:
            raise TypeError(f"{what} is {x.dtype} of shape {tuple(x.shape)}: integer inputs are token ids (N, T); "
                            "images must be uint8 pixels (x.to(torch.uint8)) or floats")
        if x.numel() and int(x.min()) < 0:
            raise ValueError(f"{what} holds integer token ids, which must be >= 0; found {int(x.min())}")
        return x.long()
    raise TypeError(f"{what} must be uint8 pixels (0..255), floating point values or integer token ids, got "
                    f"{x.dtype}")


def _labels(y: torch.Tensor, what: str) -> torch.Tensor:
    if y.is_floating_point() or y.dtype == torch.bool or y.ndim != 1:
        raise TypeError(f"{what} must be a 1-D tensor of integer class indices, got {y.dtype} of shape "
                        f"{tuple(y.shape)}")
    return y.long()


def _from_tensors(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                  name: str, num_classes: int | None, inputs: str = "auto") -> Dataset:
    train_x, test_x = _images(train_x, "train_x", inputs), _images(test_x, "test_x", inputs)
    train_y, test_y = _labels(train_y, "train_y"), _labels(test_y, "test_y")
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{split}_x has {x.shape[0]} examples but {split}_y has {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise ValueError(f"{split}_x is empty")
    if train_x.shape[1:] != test_x.shape[1:] or train_x.dtype != test_x.dtype:
        raise ValueError(f"train_x {tuple(train_x.shape[1:])} {train_x.dtype} and test_x "
                         f"{tuple(test_x.shape[1:])} {test_x.dtype} must have the same per-example shape and dtype")
    classes = num_classes if num_classes is not None else _inferred_classes(train_y, test_y, name)
    return _validated(Dataset(name, train_x.contiguous(), train_y, test_x.contiguous(), test_y, classes))


def _inferred_classes(train_y: torch.Tensor, test_y: torch.Tensor, name: str) -> int:
    """The largest label + 1, refused when some class below it has no training example (a stray label such as 200
    among digits would otherwise build a 201-class model)."""
    classes = int(max(train_y.max(), test_y.max())) + 1
    missing = sorted(set(range(classes)) - set(train_y.unique().tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{name}: the labels imply {classes} classes, but classes {shown} have no training example; "
                         "check the labels, or pass num_classes if some classes are meant to be absent")
    return classes


def _validated(ds: Dataset) -> Dataset:
    for split, y in (("training", ds.train_y), ("test", ds.test_y)):
        if len(y) and not (int(y.min()) >= 0 and int(y.max()) < ds.num_classes):
            raise ValueError(f"{ds.name}: {split} labels must lie in [0, {ds.num_classes}) (num_classes="
                             f"{ds.num_classes}), found {int(y.min())}..{int(y.max())}")
    return ds


def _materialize(ds: torch.utils.data.Dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A map-style torch Dataset of (input, label) pairs as two tensors (read once, item by item)."""
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"the {split} torch Dataset must have a length (a map-style Dataset)") from None
    items = [ds[i] for i in range(n)]
    if not items or not isinstance(items[0], (tuple, list)) or len(items[0]) != 2:
        raise TypeError(f"the {split} torch Dataset must return (input, label) pairs")
    xs = torch.stack([torch.as_tensor(np.asarray(x)) if not torch.is_tensor(x) else x for x, _ in items])
    ys = torch.as_tensor([int(y) for _, y in items])
    return xs, ys


def _from_file(path: Path, name: str, num_classes: int | None, inputs: str) -> Dataset:
    """A ``.pt`` file (``torch.save`` of a dict with train_x, train_y, test_x, test_y, optionally ``inputs``) or an
    ``.npz`` file with those arrays."""
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        if path.suffix == ".npz":
            with np.load(path) as arrays:
                content: Any = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, and what it should hold
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"cannot read data file {path} ({type(err).__name__}: {first[:120]}); it must be a "
                         f"torch.save'd dict or an .npz file with the keys {_KEYS}") from err
    if not isinstance(content, Mapping):
        raise ValueError(f"data file {path} holds a {type(content).__name__}; it must hold a dict with the keys "
                         f"{_KEYS}")
    return as_dataset(dict(content), name, num_classes, inputs)


def _from_folder(folder: Path, name: str, num_classes: int | None) -> Dataset:
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {folder} does not exist")
    if all(_find_idx(folder, stem) is not None for stem in MNIST_FILES):
        ds = load_idx_folder(folder, name)
        classes = num_classes or _inferred_classes(ds.train_y, ds.test_y, f"{name} ({folder})")
        return _validated(Dataset(name, ds.train_x, ds.train_y, ds.test_x, ds.test_y, classes))
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return load_image_folder(folder, name, num_classes)
    raise FileNotFoundError(f"{folder} holds neither MNIST's IDX files ({', '.join(MNIST_FILES)}, raw or .gz) nor "
                            "class folders train/<class>/*.png and test/<class>/*.png")


def load_image_folder(folder: str | os.PathLike, name: str = "custom", num_classes: int | None = None) -> Dataset:
    """Class folders ``train/<class>/<image>`` and ``test/<class>/<image>`` as uint8 tensors.

    Classes are the sorted folder names of ``train`` (``test`` may lack some); grayscale images stay one channel
    when every image is grayscale, otherwise all are converted to RGB; all are resized to the first image's size.
    """

    root = Path(folder)
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{root / 'train'} has no class folders")
    unknown = sorted({p.name for p in (root / "test").iterdir() if p.is_dir()} - set(classes))
    if unknown:
        raise ValueError(f"test classes {unknown} have no folder under {root / 'train'}")
    absent = [c for c in classes if not (root / "test" / c).is_dir()]
    if absent:
        raise ValueError(f"classes {absent} have no folder under {root / 'test'}: every class needs test images too "
                         f"(add {root / 'test' / absent[0]}/ with some, or remove the class from train)")
    files = {split: [(p, i) for i, c in enumerate(classes) for p in sorted((root / split / c).iterdir())
                     if p.suffix.lower() in IMAGE_SUFFIXES] for split in ("train", "test")}
    for split, items in files.items():
        if not items:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root / split}")
    images = {path: _opened(path) for items in files.values() for path, _ in items}  # each file decoded once
    headers = {path: (im.mode, im.size) for path, im in images.items()}
    size = headers[files["train"][0][0]][1]
    modes = {m for m, _ in headers.values()}
    mode = "L" if modes <= {"L", "1"} else "RGB"
    gray = sum(m in ("L", "1") for m, _ in headers.values())
    if mode == "RGB" and gray:
        warnings.warn(f"{root}: {gray} grayscale and {len(headers) - gray} colour images: all are read as RGB "
                      "(grayscale ones repeated over 3 channels)", UserWarning, stacklevel=2)
    resized = sum(s != size for _, s in headers.values())
    if resized:
        warnings.warn(f"{root}: {resized} of {len(headers)} images are not {size[0]}x{size[1]} (the first training "
                      "image's size): they are resized to it", UserWarning, stacklevel=2)

    def decode(items: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        arrays = []
        for path, _ in items:  # per file by nature
            with images.pop(path) as im:
                arrays.append(np.asarray(im.convert(mode).resize(size)))
        x = torch.from_numpy(np.stack(arrays))
        x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.tensor([label for _, label in items])

    train_x, train_y = decode(files["train"])
    test_x, test_y = decode(files["test"])
    return _validated(Dataset(name, train_x, train_y, test_x, test_y, num_classes or len(classes)))


def _opened(path: Path):
    """``PIL.Image.open(path)``, a file it cannot read named in the error with what to do."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        im.load()
        return im
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ValueError(f"cannot read image {path} ({type(err).__name__}: {err}); replace or remove the file") from err


def data_fingerprint(ds: Dataset) -> str:
    """sha1 (16 hex digits) of what a run reads from ``ds``: every tensor's dtype, shape and bytes, the class count,
    normalisation and augmentation. Equal data give equal fingerprints whatever their origin; a changed pixel
    or label gives another one (the name and the synthetic flag are not hashed)."""
    h = hashlib.sha1()
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        hash_tensor(h, t)
    h.update(repr((ds.num_classes, ds.mean, ds.std, ds.crop_padding)).encode())
    return h.hexdigest()[:16]


def hash_tensor(h: Any, t: torch.Tensor, key: str = "") -> None:
    """Feed ``key``, ``t``'s dtype and shape, then its raw bytes (no copy) into the hash ``h``."""
    t = t.detach().cpu().contiguous()
    h.update(f"{key}{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy() if t.numel() else b"")
