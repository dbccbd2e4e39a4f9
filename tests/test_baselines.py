"""Baselines hit the requested sparsity exactly; bad sparsities are refused; experiments follow NNrelief."""

import pytest
import torch

from relief_nb.core.masks import current_mask
from relief_nb.experiments.config import ExperimentConfig
from relief_nb.experiments.run import Run
from relief_nb.experiments.training import TrainConfig
from relief_nb.graph.structure import trace_model
from relief_nb.models.zoo import create_model, input_shape_of
from relief_nb.pruning.baselines import BASELINES, prune_baseline, prune_to_counts


def graph_of(name="lenet5"):
    model = create_model(name, seed=0)
    return model, trace_model(model, input_shape_of(name))


def kept(graph):
    return {layer.name: int(current_mask(layer.module).sum()) for layer in graph.layers()}


@pytest.mark.parametrize("method", ["magnitude_layer", "random"])
def test_per_layer_sparsity_is_exact_and_iterative(method):
    _, graph = graph_of()
    sparsity = {"conv1": 0.5, "conv2": 0.3, "fc1": 0.9, "fc2": 0.25}
    prune_baseline(graph, method, sparsity, torch.Generator().manual_seed(0))
    sizes = {layer.name: layer.module.weight.numel() for layer in graph.layers()}
    assert kept(graph) == {n: round((1 - s) * sizes[n]) for n, s in sparsity.items()}
    before = {layer.name: current_mask(layer.module).clone() for layer in graph.layers()}
    prune_to_counts(graph, method, {"conv1": 100, "conv2": 10000, "fc1": 1000, "fc2": 100})
    assert kept(graph) == {"conv1": 100, "conv2": 10000, "fc1": 1000, "fc2": 100}
    for layer in graph.layers():
        assert (current_mask(layer.module) <= before[layer.name]).all()


def test_magnitude_layer_keeps_the_largest_weights():
    model, graph = graph_of()
    prune_baseline(graph, "magnitude_layer", {"fc1": 0.9})
    w = model.fc1.weight_orig.abs()
    mask = current_mask(model.fc1).bool()
    assert w[mask].min() >= w[~mask].max()


def test_global_magnitude_keeps_the_total_and_the_largest():
    model, graph = graph_of()
    total = sum(layer.module.weight.numel() for layer in graph.layers())
    prune_baseline(graph, "magnitude_global", 0.8)
    assert sum(kept(graph).values()) == round(0.2 * total)
    kept_min = min(layer.module.weight_orig.abs()[current_mask(layer.module).bool()].min() for layer in graph.layers())
    cut_max = max(layer.module.weight_orig.abs()[~current_mask(layer.module).bool()].max() for layer in graph.layers())
    assert kept_min >= cut_max


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_sparsity_outside_range_is_refused(bad):
    _, graph = graph_of()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_baseline(graph, "random", bad)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_baseline(graph, "magnitude_layer", {"fc1": bad})


def test_unknown_baseline_and_growing_masks_are_refused():
    _, graph = graph_of()
    with pytest.raises(ValueError, match="magnitude_global"):
        prune_baseline(graph, "taylor", 0.5)
    prune_to_counts(graph, "random", {"fc1": 10})
    with pytest.raises(ValueError, match="masks only shrink"):
        prune_to_counts(graph, "random", {"fc1": 20})


def test_baseline_experiment_follows_the_reference_sparsity(tmp_path):
    small = dict(model="lenet5", synthetic=True, n_train=400, n_test=100, val_size=100, scoring_size=64,
                 iterations=2, pretrain=TrainConfig(1, batch_size=100), retrain=TrainConfig(1, batch_size=100))
    reference = Run(ExperimentConfig.of(**small), tmp_path, progress=False)
    reference.run()
    ref_layers = reference.layers()
    for method in ("magnitude_layer", "random", "magnitude_global"):
        run = Run(ExperimentConfig.of(**small, method=method, reference=reference.experiment_name()), tmp_path,
                  progress=False)
        metrics = run.run()
        assert metrics.iteration.tolist() == [0, 1, 2]
        assert metrics.test_acc.iloc[0] == reference.metrics().test_acc.iloc[0]  # same pretrained model
        layers = run.layers()
        if method == "magnitude_global":
            assert (layers.groupby("iteration").weights_remaining.sum()
                    == ref_layers.groupby("iteration").weights_remaining.sum()).all()
        else:
            assert layers.weights_remaining.tolist() == ref_layers.weights_remaining.tolist()
    with pytest.raises(ValueError, match="reference"):
        ExperimentConfig.of(method="random")


@pytest.mark.parametrize("method", BASELINES)
def test_baselines_work_on_channels_last_models(method):
    """Experiments train channels-last; torch's own prune helpers flatten with view(-1), which fails there."""
    model = create_model("lenet5", seed=0).to(memory_format=torch.channels_last)
    graph = trace_model(model, (1, 28, 28))
    prune_baseline(graph, method, 0.5, torch.Generator().manual_seed(0))
    prune_baseline(graph, method, {layer.name: 0.75 for layer in graph.layers()} if method != "magnitude_global"
                   else 0.75, torch.Generator().manual_seed(0))
    kept = sum(int((current_mask(layer.module) != 0).sum()) for layer in graph.layers())
    total = sum(layer.module.weight_orig.numel() for layer in graph.layers())
    assert abs(kept - round(0.25 * total)) <= len(graph.layers())
