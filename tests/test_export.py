"""Exported models are smaller and compute the same function as their masked originals."""

from pathlib import Path

import pytest
import torch

from relief_nb.data import load_dataset, prepare
from relief_nb.export import ExportError, export_pruned, save_exported, saved_size_bytes
from relief_nb.models import create_model, input_shape_of
from relief_nb.relief import ReliefConfig, relief_prune

DATA = Path(__file__).resolve().parent.parent / "data"


def pruned(name, passes=2, n=64):
    model = create_model(name, seed=0)
    x = torch.rand(n, *input_shape_of(name))
    for _ in range(passes):
        relief_prune(model, x, ReliefConfig(0.8, 0.9))
    return model.eval()


@pytest.mark.parametrize("name", ["lenet300-100", "lenet5", "vgg11"])
@pytest.mark.parametrize("sparse", [False, True])
def test_exported_model_matches_masked_model_on_random_inputs(name, sparse):
    model = pruned(name)
    small = export_pruned(model, input_shape_of(name), sparse_linear=sparse)
    x = torch.rand(16, *input_shape_of(name))
    torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-4)
    dense_params = sum(p.numel() for p in create_model(name).parameters())
    assert sum(p.numel() for p in small.parameters()) < dense_params
    assert not any(k.endswith("_mask") for k in small.state_dict())


@pytest.mark.skipif(not (DATA / "mnist").exists(), reason="real MNIST not fetched (make fetch-mnist)")
def test_exported_lenet5_matches_on_real_mnist(tmp_path):
    ds = load_dataset("mnist", DATA)
    x = prepare(ds.test_x[:200], ds, "cpu")
    model = create_model("lenet5", seed=0)
    relief_prune(model, prepare(ds.train_x[:500], ds, "cpu"))
    model.eval()
    small = export_pruned(model, (1, 28, 28))
    torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-5)
    path = save_exported(small, tmp_path / "lenet5.pt")
    loaded = torch.load(path, weights_only=False)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)
    assert saved_size_bytes(small) < saved_size_bytes(create_model("lenet5"))


def test_removed_units_are_sliced_away():
    model = pruned("lenet300-100", passes=3)
    small = export_pruned(model, (1, 28, 28))
    assert small.fc1.out_features < 300 and small.fc2.in_features == small.fc1.out_features
    assert small.fc3.out_features == 10


def test_export_refuses_unpruned_and_resnet_models():
    with pytest.raises(ExportError, match="never pruned"):
        export_pruned(create_model("lenet5"), (1, 28, 28))
    with pytest.raises(ExportError, match=r"module layers\.0 \(ResidualBlock\)"):
        export_pruned(create_model("resnet20"), (3, 32, 32))
