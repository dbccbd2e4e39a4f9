"""relief_nb.core.masks: the one place that reads ``<name>_orig`` / ``<name>_mask``."""

import torch
from torch import nn

from relief_nb.core.masks import (
    current_mask,
    effective,
    is_pruned,
    kept_count,
    load_pruned_state_dict,
    raw_weight,
    refresh_weights,
    shrink_mask,
)


def test_unpruned_module():
    layer = nn.Linear(4, 3)
    assert not is_pruned(layer)
    assert raw_weight(layer) is layer.weight and effective(layer) is layer.weight
    assert raw_weight(layer, "bias") is layer.bias
    assert kept_count(layer) == (12, 12) and kept_count(layer, "bias") == (3, 3)
    assert torch.equal(current_mask(layer), torch.ones(3, 4))


def test_absent_parameter():
    layer = nn.Linear(4, 3, bias=False)
    assert raw_weight(layer, "bias") is None and effective(layer, "bias") is None
    assert kept_count(layer, "bias") == (0, 0)


def test_pruned_module():
    layer = nn.Linear(4, 3)
    keep = torch.rand(3, 4) > 0.5
    shrink_mask(layer, "weight", keep)
    assert is_pruned(layer) and not is_pruned(layer, "bias")
    assert raw_weight(layer) is layer.weight_orig
    assert torch.equal(effective(layer), layer.weight_orig * keep)
    assert kept_count(layer) == (12, int(keep.sum()))
    shrink_mask(layer, "weight", torch.zeros(3, 4, dtype=torch.bool))
    assert kept_count(layer) == (12, 0) and raw_weight(layer).abs().sum() > 0  # the unmasked values stay


def test_refresh_weights_sets_the_visible_tensor():
    layer = nn.Linear(4, 3)
    shrink_mask(layer, "weight", torch.ones(3, 4, dtype=torch.bool))
    with torch.no_grad():
        layer.weight_mask[0] = 0
    assert layer.weight[0].abs().sum() > 0  # not yet recomputed
    refresh_weights(layer)
    assert torch.equal(layer.weight, effective(layer)) and layer.weight[0].abs().sum() == 0


def test_load_pruned_state_dict_round_trip():
    source = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    shrink_mask(source[0], "weight", torch.rand(3, 4) > 0.5)
    shrink_mask(source[2], "bias", torch.tensor([True, False]))
    fresh = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    load_pruned_state_dict(fresh, source.state_dict())
    for a, b in zip(source.modules(), fresh.modules()):
        for name in ("weight", "bias"):
            if hasattr(a, name):
                assert torch.equal(effective(a, name), effective(b, name))
                assert kept_count(a, name) == kept_count(b, name)
