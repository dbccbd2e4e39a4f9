"""Gates and activations with f(0) != 0 (issue 24): a product of two tensors carrying units (squeeze-and-excitation,
MobileNetV3's hardsigmoid gate) joins their channels into one group; sigmoid / softplus units pass through with
their channels merged, and a layer reading them keeps, at export, every channel it reads; ChannelShuffle is
followed unit by unit. Each network prunes with units removed and exports to a model whose outputs equal the
masked one's."""

from __future__ import annotations

import warnings

import pytest
import torch
from nets import GATES, SENet
from torch import nn

from relief_nb import ReliefConfig, export_pruned, relief_prune
from relief_nb.graph.trace import alive_units
from relief_nb.pruning.unit_rules import remove_units

# with random weights a MobileNetV3 block's branch carries under 10 % of the residual sum, so the residual rule
# (rightly) cuts whole blocks; it is switched off there so that the gates inside the blocks are what is tested
CONFIGS = {"se_net": ReliefConfig(0.9, 0.9), "mobilenet_v3_block": ReliefConfig(0.9, 0.9, residual_rule=False),
           "sigmoid_mlp": ReliefConfig(0.7, 0.7)}


def _prune(name: str):
    make, batch = GATES[name]
    torch.manual_seed(0)
    model = make().eval()
    x = batch(128, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: a pass may remove most of them, which warns
        graph = relief_prune(model, x, CONFIGS[name])
    return model, graph, x, batch


@pytest.mark.parametrize("name", sorted(GATES))
def test_gated_networks_prune_with_units_removed_and_export_equal(name):
    model, graph, x, batch = _prune(name)
    removed = {layer.name: layer.out_units - int(alive_units(layer).sum()) for layer in graph.layers()}
    assert sum(removed.values()) > 0, removed
    exported = export_pruned(model, x)
    probe = batch(16, 1)
    with torch.no_grad():
        torch.testing.assert_close(exported(probe), model(probe), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in exported.parameters()) < sum(p.numel() for p in GATES[name][0]().parameters())


def test_a_squeeze_excitation_gate_joins_the_gated_channels_with_the_gate_units():
    model, graph, x, _ = _prune("se_net")
    exported = export_pruned(model, x)
    assert exported.c1.out_channels == exported.se1.fc2.out_features < SENet().c1.out_channels
    assert exported.c2.out_channels == exported.se2.fc2.out_channels < SENet().c2.out_channels
    # a gate channel is never declared dead on its own: the product's channel is merged
    assert all(graph.escapes["se2.fc2"])


def test_a_layer_reading_sigmoid_units_keeps_every_channel_it_reads():
    """A removed fc1 unit still emits sigmoid(0) = 0.5 into fc2: the export keeps it while fc2 reads it."""
    model, graph, x, _ = _prune("sigmoid_mlp")
    gone = torch.zeros(48, dtype=torch.bool)
    gone[:5] = True
    remove_units(graph.layer("fc1"), gone)  # as the selection would: no input, no bias left
    assert not bool(alive_units(graph.layer("fc1"))[:5].any())
    assert bool((model.fc2.weight_mask[:, :5] != 0).any())  # ... but fc2 still reads them
    exported = export_pruned(model, x)  # checks equality with the masked model on a probe batch itself
    assert exported.fc1.out_features == 48
    with torch.no_grad():  # dropping them would change the outputs: their 0.5 is part of what fc2 computes
        without = model.fc3(torch.nn.functional.softplus(
            torch.sigmoid(model.fc1(x.flatten(1)))[:, 5:] @ model.fc2.weight[:, 5:].T + model.fc2.bias))
        assert not torch.allclose(without, model(x), atol=1e-4)


def test_channel_shuffle_is_followed_unit_by_unit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU(), nn.ChannelShuffle(3), nn.Conv2d(12, 12, 1, groups=3),
                          nn.ReLU(), nn.Conv2d(12, 12, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(12, 5)).eval()
    x = torch.rand(64, 3, 10, 10)
    graph = relief_prune(model, x, ReliefConfig(0.9, 0.9))
    perm = torch.arange(12).view(3, 4).t().reshape(-1)
    assert torch.equal(graph.layer("3").input_map["0"], perm)  # the grouped conv reads conv 0's units shuffled
    assert sum(layer.out_units - int(alive_units(layer).sum()) for layer in graph.layers()) > 0
    exported = export_pruned(model, x)
    with torch.no_grad():
        torch.testing.assert_close(exported(x[:8]), model(x[:8]), rtol=1e-4, atol=1e-5)
