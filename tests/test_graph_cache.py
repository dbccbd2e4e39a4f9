"""relief_prune(model, batch) reuses the model's traced graph while its structure is unchanged, and only then."""

from __future__ import annotations

import copy
import gc
import weakref

import torch
from torch import nn

from relief_nb.core.masks import mask_snapshot
from relief_nb.graph.trace import trace_graph
from relief_nb.models.zoo import create_model
from relief_nb.pruning.relief import ReliefConfig, relief_prune, trace_for_batch

CONFIG = ReliefConfig(0.9, 0.95)


class Switchable(nn.Module):
    """A flag steers forward: with ``skip`` the second layer is bypassed (a different graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(12, 12), nn.Linear(12, 12), nn.Linear(12, 3)
        self.skip = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        if not self.skip:
            h = torch.relu(self.fc2(h))
        return self.out(h)


def test_repeated_calls_reuse_the_graph_and_prune_as_a_fresh_trace_does():
    torch.manual_seed(0)
    model = create_model("lenet5", seed=0).eval()
    x = torch.rand(64, 1, 28, 28)
    relief_prune(model, x, CONFIG)  # installs masks: a new structure, traced once more below
    graph = relief_prune(model, x, CONFIG)
    assert relief_prune(model, x, CONFIG) is graph
    twin = copy.deepcopy(model)
    relief_prune(model, x, CONFIG)
    relief_prune(twin, x, CONFIG, graph=trace_for_batch(twin, x, cache=False))
    assert all(torch.equal(a, b) for a, b in zip(mask_snapshot(model).values(), mask_snapshot(twin).values()))


def test_a_changed_structure_is_traced_again():
    model = Switchable().eval()
    x = torch.rand(8, 12)
    graph = trace_for_batch(model, x)
    assert trace_for_batch(model, x) is graph
    model.skip = True  # a plain attribute that changes forward
    assert [layer.name for layer in trace_for_batch(model, x).layers()] == ["fc1", "out"]
    model.skip = False
    model.fc2 = nn.Linear(12, 12)  # a replaced submodule
    new = trace_for_batch(model, x)
    assert new is not graph and new.layer("fc2").module is model.fc2
    model.train()  # the graph is traced in eval mode, whatever the model's mode: switching reuses it
    assert trace_for_batch(model, x) is new
    assert trace_for_batch(model, x, ignore=["fc2"]) is not trace_for_batch(model, x)
    assert trace_graph(model, (12,)) is not trace_graph(model, (12,), cache=False)


def test_a_model_changed_in_place_is_traced_again():
    model = Switchable().eval()
    x = torch.rand(8, 12)
    graph = trace_for_batch(model, x)
    model.fc2.weight = nn.Parameter(torch.rand(12, 12))  # a replaced parameter
    assert trace_for_batch(model, x) is not graph


def test_the_cache_keeps_no_model_alive():
    model = create_model("resnet20", seed=0)
    relief_prune(model, torch.rand(4, 3, 32, 32), CONFIG)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
