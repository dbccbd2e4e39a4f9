"""One clean line and exit 2 for what a user's own model or a full disk does wrong (issue 25): a forward that
raises (named, with the exception and the line that raised), a factory that returns something other than a
torch.nn.Module, a model the graph cannot prune, a full disk (nothing half-written)."""

from __future__ import annotations

import errno

import pytest
import torch
from torch import nn

from relief_nb import relief_prune
from relief_nb.cli import main
from relief_nb.graph.nodes import ModelForwardError


class RaisesInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.shape[-1] != 5:  # a shape check of the user's own
            raise ValueError("expected 5 features")
        return self.fc(x)


def test_a_forward_that_raises_is_named_with_its_exception_and_line_not_blamed_on_tracing():
    with pytest.raises(ModelForwardError) as err:
        relief_prune(RaisesInForward(), torch.rand(8, 4))
    message = str(err.value)
    assert "ValueError: expected 5 features" in message and "test_clean_failures.py:" in message
    assert "torch.fx" not in message and "\n" not in message


def _write_module(tmp_path, monkeypatch, body: str) -> str:
    name = f"badnets_{tmp_path.name.replace('-', '_')}"  # one module per test: never a cached one
    (tmp_path / f"{name}.py").write_text("import torch\nfrom torch import nn\n\n" + body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


@pytest.mark.parametrize(("body", "expected"), [
    ("def make_net(num_classes):\n    return 'not a model'\n", "returned str, not a torch.nn.Module"),
    ("class Bad(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
     "        self.fc = nn.Linear(64, 2)\n\n    def forward(self, x):\n"
     "        raise RuntimeError('boom in forward')\n\n"
     "def make_net(num_classes):\n    return Bad()\n", "RuntimeError: boom in forward"),
    ("class Bad(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.a = nn.Linear(784, 8)\n"
     "        self.b = nn.Linear(8, 2)\n\n    def forward(self, x):\n        h = self.a(x.flatten(1))\n"
     "        return self.b(h - h.flip(1))\n\ndef make_net(num_classes):\n    return Bad()\n",
     "NNrelief cannot prune through it"),
])
def test_a_bad_model_of_ones_own_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, body, expected):
    module = _write_module(tmp_path, monkeypatch, body)
    code = main(["run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=True", "--model", f"{module}:make_net",
                 "--results-dir", str(tmp_path / "results"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_is_one_line_exit_2_and_the_command_resumes(tmp_path, monkeypatch, capsys):
    from relief_nb.common import files

    real = files.atomic_write

    def full(path, *args, **kwargs):
        if str(path).endswith("metrics.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(files, "atomic_write", full)
    monkeypatch.setattr("relief_nb.experiments.results.atomic_write", full)
    args = ["run", "lenet300-mnist", "--profile", "smoke", "-p", "synthetic=True", "--results-dir", str(tmp_path / "r"),
            "--no-progress"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "disk is full" in err and "rerun the same command" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    assert main(args) == 0


# ------------------------------------------------------------------ own data, validated before any work

def _digits_folder(root, mode_of=lambda i: "L", size_of=lambda i: (8, 8), classes=("a", "b"), test=("a", "b")):
    from PIL import Image

    for split, names in (("train", classes), ("test", test)):
        for c in names:
            (root / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new(mode_of(i), size_of(i), color=40 * i).save(root / split / c / f"{i}.png")
    return root


def test_an_idx_folder_with_a_stray_label_is_refused_naming_the_missing_classes(tmp_path):
    import numpy as np
    from test_data import write_idx

    from relief_nb import as_dataset

    labels = np.array([0, 1, 2, 1, 0, 200] * 2, dtype=np.uint8)
    arrays = {"train-images-idx3-ubyte": np.zeros((12, 28, 28), np.uint8), "train-labels-idx1-ubyte": labels,
              "t10k-images-idx3-ubyte": np.zeros((3, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": np.array([0, 1, 2], np.uint8)}
    for name, array in arrays.items():
        write_idx(tmp_path / name, array)
    with pytest.raises(ValueError, match=r"201 classes, but classes 3, 4, 5, 6, 7 and 192 more have no training"):
        as_dataset(tmp_path)
    assert as_dataset(tmp_path, num_classes=201).num_classes == 201  # meant: say so


def test_a_class_without_test_images_is_named_with_the_folder_to_add(tmp_path):
    from relief_nb import as_dataset

    _digits_folder(tmp_path, test=("a",))
    with pytest.raises(ValueError, match=r"classes \['b'\] have no folder under .*test: every class needs test"):
        as_dataset(tmp_path)


def test_an_unreadable_image_is_named(tmp_path):
    from relief_nb import as_dataset

    _digits_folder(tmp_path)
    (tmp_path / "train" / "b" / "1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match=r"cannot read image .*train/b/1.png .*replace or remove the file"):
        as_dataset(tmp_path)


def test_mixed_gray_and_colour_images_and_mixed_sizes_are_read_with_a_warning_that_says_so(tmp_path):
    from relief_nb import as_dataset

    _digits_folder(tmp_path, mode_of=lambda i: "RGB" if i == 2 else "L", size_of=lambda i: (8, 8) if i else (9, 8))
    with pytest.warns(UserWarning) as record:
        ds = as_dataset(tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "8 grayscale and 4 colour images: all are read as RGB" in messages
    assert "8 of 12 images are not 9x8" in messages and "resized" in messages
    assert ds.input_shape == (3, 8, 9)


def test_the_hostile_script_handles_every_bad_input(capsys):
    """benchmarks/hostile.py: twenty CLI inputs (exit 2, one line naming the problem, no traceback, the results
    folder unchanged) and eight API ones (one exception of the documented kind, one line)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    rows = __import__("hostile").main([])
    out = capsys.readouterr().out
    assert len(rows) >= 28 and all(r["handled"] for r in rows), [r for r in rows if not r["handled"]]
    assert f"{len(rows)} of {len(rows)} handled" in out
