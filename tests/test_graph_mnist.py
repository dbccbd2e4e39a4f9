"""Trained on real MNIST, each plain-torch architecture keeps its accuracy (< 1 point change) after a mild pass
(alpha 0.99), and its export equals the masked model. Needs ``data/mnist`` (``make fetch-mnist``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nets import GeluMLP, MobileNetV2, ViT, resnet18, resnet50, vit_attention_paths
from test_graph import check_consistent
from torch import nn

from relief_nb.data.datasets import load_dataset, prepare
from relief_nb.graph.export import export_pruned
from relief_nb.pruning.relief import ReliefConfig, relief_prune

DATA = Path(__file__).resolve().parent.parent / "data"
pytestmark = [pytest.mark.long,
              pytest.mark.skipif(not (DATA / "mnist").exists(), reason="real MNIST not fetched (make fetch-mnist)")]

BUILDERS = {
    "gelu-mlp": lambda: GeluMLP(),
    "resnet18": lambda: resnet18(width=8, in_channels=1),
    "resnet50": lambda: resnet50(width=4, in_channels=1),
    "mobilenetv2": lambda: MobileNetV2(width=0.5, in_channels=1),
    "vit": lambda: ViT(),
}
N_TRAIN, N_TEST, N_SCORE = 6000, 2000, 500


@pytest.fixture(scope="module")
def mnist():
    ds = load_dataset("mnist", DATA)
    return (prepare(ds.train_x[:N_TRAIN], ds, "cpu").contiguous(), ds.train_y[:N_TRAIN],
            prepare(ds.test_x[:N_TEST], ds, "cpu").contiguous(), ds.test_y[:N_TEST])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 2) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    settle_batchnorm(model, x)


def settle_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Recompute BatchNorm's running statistics as a plain average over the training set with the final weights
    (after a short training, the exponential averages still mix in early weights, so a trained model's eval mode
    is not yet the model the weights describe, and any change, pruning included, moves its accuracy)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for chunk in x.split(500):
            model(chunk)


@pytest.mark.parametrize("name", BUILDERS)
def test_mild_pass_keeps_accuracy_on_real_mnist(name, mnist):
    train_x, train_y, test_x, test_y = mnist
    torch.manual_seed(0)
    model = BUILDERS[name]()
    train(model, train_x, train_y)
    before = accuracy(model, test_x, test_y)
    assert before > 0.75, f"{name} trained to only {before:.3f}"  # 2 short epochs on a CPU: trained, not tuned
    ignore = vit_attention_paths(model) if name == "vit" else ()
    graph = relief_prune(model, train_x[:N_SCORE], ReliefConfig(0.99, 0.99), ignore=ignore)
    check_consistent(model, graph)
    after = accuracy(model, test_x, test_y)
    print(f"{name}: test accuracy {before:.4f} -> {after:.4f} after a pass at alpha 0.99")
    assert abs(after - before) < 0.01, f"{name}: {before:.4f} -> {after:.4f}"
    small = export_pruned(model, (1, 28, 28), graph=graph, probe=test_x[:64])
    torch.testing.assert_close(small(test_x[:256]), model(test_x[:256]), rtol=1e-4, atol=1e-4)
