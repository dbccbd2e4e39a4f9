"""Readers on fabricated files in each published layout, downloads against a local server, batches."""

import gzip
import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from relief_nb.data import datasets as data
from relief_nb.data import fetching
from relief_nb.data.datasets import (
    ChecksumError,
    DataNotFoundError,
    download,
    load_dataset,
    random_crop_flip,
    read_idx,
    synthetic_dataset,
)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def fabricate_mnist(folder: Path, compress: bool = False) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5),
    }
    for stem, arr in arrays.items():
        write_idx(folder / (stem + (".gz" if compress else "")), arr, compress)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_idx_folder_reader(tmp_path, compress):
    arrays = fabricate_mnist(tmp_path / "mnist", compress)
    ds = load_dataset("mnist", tmp_path)
    assert ds.train_x.shape == (12, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(ds.test_y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_truncated_idx_is_refused(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 4, 4)))
    (tmp_path / "y").write_bytes((tmp_path / "x").read_bytes()[:-5])
    assert read_idx(tmp_path / "x").shape == (3, 4, 4)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "y")
    (tmp_path / "z").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "z")


def test_cifar10_and_100_readers(tmp_path):
    rng = np.random.default_rng(0)
    c10 = tmp_path / "cifar-10-batches-py"
    c10.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(range(4))}
        with open(c10 / name, "wb") as f:
            pickle.dump(entry, f)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    with open(c10 / "data_batch_1", "rb") as f:
        first = pickle.load(f, encoding="bytes")[b"data"][0]
    assert np.array_equal(ds.train_x[0].numpy().reshape(-1), first)  # channel-major, as published
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for name, n in (("train", 6), ("test", 3)):
        entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": [99] * n,
                 b"coarse_labels": [1] * n}
        with open(c100 / name, "wb") as f:
            pickle.dump(entry, f)
    ds = load_dataset("cifar100", tmp_path)
    assert ds.num_classes == 100 and ds.train_y.tolist() == [99] * 6


def test_tiny_imagenet_reader_decodes_once_and_caches(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    colours = {"n01": (255, 0, 0), "n02": (0, 0, 255)}
    for w in wnids:
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 64), colours[w]).save(folder / f"{w}_{i}.JPEG")
    lines = []
    for i, w in enumerate(["n02", "n01"]):
        Image.new("RGB", (64, 64), colours[w]).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset("tiny-imagenet", tmp_path)
    assert ds.train_x.shape == (6, 3, 64, 64) and ds.num_classes == 200
    assert ds.test_y.tolist() == [1, 0]
    assert ds.test_x[0, 2].float().mean() > 200 and ds.test_x[0, 0].float().mean() < 50  # blue, label n02
    assert (root / "decoded_uint8.npz").exists()
    for p in root.rglob("*.JPEG"):
        p.unlink()
    again = load_dataset("tiny-imagenet", tmp_path)  # from the cache alone
    assert torch.equal(again.train_x, ds.train_x)


@pytest.mark.parametrize("name, folder", [("mnist", "mnist"), ("cifar10", "cifar-10-batches-py"),
                                          ("cifar100", "cifar-100-python"), ("tiny-imagenet", "tiny-imagenet-200")])
def test_missing_data_names_folder_and_fetch_command(tmp_path, name, folder):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(name, tmp_path)
    msg = str(err.value)
    assert name in msg and str(tmp_path / folder) in msg and f"relief-nb fetch {name} --data-dir {tmp_path}" in msg


def test_unknown_dataset_lists_known():
    with pytest.raises(KeyError, match="cifar10.*mnist"):
        load_dataset("imagenet-1k")


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(500, "server error")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.files
    httpd.shutdown()
    _Handler.files.clear()


def test_download_success_wrong_checksum_and_server_error(server, tmp_path):
    base, files = server
    files["/good.bin"] = b"hello relief"
    md5 = hashlib.md5(b"hello relief").hexdigest()
    out = download(f"{base}/good.bin", tmp_path / "good.bin", md5)
    assert out.read_bytes() == b"hello relief"
    with pytest.raises(ChecksumError, match="bad.bin"):
        download(f"{base}/good.bin", tmp_path / "bad.bin", "0" * 32)
    assert not (tmp_path / "bad.bin").exists()
    with pytest.raises(ConnectionError, match="500"):
        download(f"{base}/missing.bin", tmp_path / "missing.bin", md5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.bin"]  # no partial files left


def test_fetch_mnist_from_urls_verifies_both_checksums(server, tmp_path, monkeypatch):
    base, files = server
    src = tmp_path / "src"
    fabricate_mnist(src, compress=True)
    raw_md5, gz_md5 = {}, {}
    for stem in data.MNIST_FILES:
        gz = (src / f"{stem}.gz").read_bytes()
        files[f"/mnist/{stem}.gz"] = gz
        gz_md5[stem] = hashlib.md5(gz).hexdigest()
        raw_md5[stem] = hashlib.md5(gzip.decompress(gz)).hexdigest()
    monkeypatch.setattr(fetching, "MNIST_FILES", raw_md5)
    monkeypatch.setattr(fetching, "MNIST_GZ_MD5", gz_md5)
    folder = data.fetch_mnist(tmp_path / "data", source="url", base_url=f"{base}/mnist/")
    assert load_dataset("mnist", tmp_path / "data").train_x.shape == (12, 1, 28, 28)
    assert sorted(p.name for p in folder.iterdir()) == sorted(raw_md5)
    # a corrupted mirror: the wrong file is named and nothing new is kept
    stem = "t10k-labels-idx1-ubyte"
    files[f"/mnist/{stem}.gz"] = gzip.compress(b"garbage")
    (folder / stem).unlink()
    with pytest.raises(ChecksumError, match=stem):
        data.fetch_mnist(tmp_path / "data", source="url", base_url=f"{base}/mnist/")
    assert not (folder / stem).exists()


def test_random_crop_flip_is_a_shifted_window():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, 2, g)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for i in range(2):
        found = any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1))
                    for r in range(5) for c in range(5) for w in [padded[i, :, r:r + 6, c:c + 6]])
        assert found


def test_validation_split_is_seeded_and_disjoint():
    ds = synthetic_dataset("mnist", 300, 50, seed=1)
    a = ds.split_validation(50, seed=3)
    b = ds.split_validation(50, seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert a[0].shape[0] == 250 and a[2].shape[0] == 50
    assert ds.synthetic and "synthetic" in ds.name
