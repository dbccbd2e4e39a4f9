"""Exported models are smaller and compute the same function as their masked originals."""

from pathlib import Path

import pytest
import torch
from nets import vit_attention_paths
from test_graph import CASES
from torch import nn

from relief_nb.data.datasets import load_dataset, prepare
from relief_nb.graph.export import ExportError, export_pruned, save_exported, saved_size_bytes
from relief_nb.models.zoo import create_model, input_shape_of
from relief_nb.pruning.relief import ReliefConfig, relief_prune

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


def test_export_refuses_unpruned_models():
    with pytest.raises(ExportError, match="never pruned"):
        export_pruned(create_model("lenet5"), (1, 28, 28))


def _pruned_net(model, shape, ignore=(), passes=2):
    torch.manual_seed(0)
    x = torch.rand(32, *shape)
    for _ in range(passes):
        relief_prune(model, x, ReliefConfig(0.8, 0.9), ignore=ignore)
    return model.eval()


@pytest.mark.parametrize("case", ["resnet20", "resnet18", "resnet50", "mobilenetv2", "concat", "forward-residual",
                                  "gelu-mlp", "vit"])
def test_export_of_residual_and_branching_nets_equals_the_masked_model(case):
    if case == "resnet20":
        model, shape, ignore = create_model("resnet20", seed=0), (3, 32, 32), ()
    else:
        build, shape, kind = CASES[case]
        torch.manual_seed(0)
        model = build()
        ignore = vit_attention_paths(model) if kind == "attn" else ()
    model = _pruned_net(model, shape, ignore)
    small = export_pruned(model, shape, ignore=ignore)  # checks itself against the masked model
    x = torch.rand(8, *shape)
    torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_batchnorm_after_relu_is_sliced_not_folded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    with torch.no_grad():
        model[2].running_mean.uniform_(-1, 1)
        model[2].running_var.uniform_(0.5, 2)
        model[2].weight.uniform_(0.5, 2)
        model[2].bias.uniform_(-1, 1)
        model[4].weight[:, :16] = 0  # channel 0 is read by nobody: sliced away
    model = _pruned_net(model, (3, 6, 6), passes=1)
    small = export_pruned(model, (3, 6, 6))
    assert isinstance(small[2], nn.BatchNorm2d) and small[2].num_features == small[0].out_channels < 8
    x = torch.rand(8, 3, 6, 6)
    torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-5)


class HardCoded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).view(-1, 8 * 4 * 4))


def test_export_refuses_a_model_it_cannot_slice():
    torch.manual_seed(0)
    model = HardCoded()
    with torch.no_grad():
        model.fc.weight[:, :16] = 0
    model = _pruned_net(model, (3, 6, 6), passes=1)
    with pytest.raises(ExportError, match="probe batch"):
        export_pruned(model, (3, 6, 6))
