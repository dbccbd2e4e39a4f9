"""Baselines pruned to a given sparsity with ``torch.nn.utils.prune``: magnitude (global or per layer, Han et
al. 2015) and random. Weights are pruned one by one (unstructured); biases are left alone.

In an experiment (``ExperimentConfig(method=..., reference=<NNrelief run folder>)``) each iteration prunes to
the per-layer (``magnitude_layer``, ``random``) or total (``magnitude_global``) number of weights NNrelief
kept at the same iteration, and retrains with the same budget.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .masks import current_mask, shrink_mask
from .structure import PruningGraph

__all__ = ["BASELINES", "METHODS", "prune_baseline", "prune_to_counts"]

BASELINES = ("magnitude_global", "magnitude_layer", "random")
METHODS = ("relief", *BASELINES)


def _remaining(module) -> int:
    return int((current_mask(module) != 0).sum())


def prune_to_counts(graph: PruningGraph, method: str, keep: Mapping[str, int] | int,
                    generator: torch.Generator | None = None) -> None:
    """Prune weights until each layer keeps ``keep[layer]`` (or, for ``magnitude_global``, the model keeps
    ``keep`` in total). Masks only shrink: asking to keep more than remains is an error."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")
    layers = {layer.name: layer.module for layer in graph.layers()}
    if method == "magnitude_global":
        total_left = sum(_remaining(m) for m in layers.values())
        target = int(keep if isinstance(keep, int) else sum(keep.values()))
        if not 0 < target <= total_left:
            raise ValueError(f"cannot keep {target} weights: {total_left} remain (masks only shrink)")
        _global_magnitude_prune(list(layers.values()), target)
        return
    if isinstance(keep, int):
        raise ValueError(f"{method} needs a per-layer count of weights to keep")
    for name, count in keep.items():
        module = layers[name]
        left = _remaining(module)
        if not 0 <= count <= left:
            raise ValueError(f"layer {name}: cannot keep {count} weights, {left} remain (masks only shrink)")
        if method == "magnitude_layer":
            _global_magnitude_prune([module], count)  # over one layer: the layer's largest surviving |weights|
        else:
            _random_prune(module, left - count, generator)


def _global_magnitude_prune(modules: list, keep: int) -> None:
    """Keep the ``keep`` largest surviving |weights| over all ``modules`` (L1 global pruning).

    Written here rather than with ``prune.global_unstructured``, which flattens masks with ``view(-1)`` and
    fails on the channels-last conv weights experiments train with.
    """
    weights = [_magnitudes(m) for m in modules]
    magnitudes = torch.cat([w.abs().flatten() for w in weights])
    alive = torch.cat([(current_mask(m) != 0).flatten() for m in modules]).nonzero().flatten()
    kept = torch.zeros_like(magnitudes, dtype=torch.bool)
    kept[alive[magnitudes[alive].topk(keep).indices]] = True
    for m, w, part in zip(modules, weights, kept.split([w.numel() for w in weights])):
        shrink_mask(m, "weight", part.view(w.shape))


def _magnitudes(module) -> torch.Tensor:
    """What torch's L1 pruning ranks by (the unmasked weight), made contiguous: prune flattens it with
    ``view(-1)``, which fails on channels-last conv weights."""
    weight = getattr(module, "weight_orig", module.weight)
    return weight.detach().contiguous()


def _random_prune(module, amount: int, generator: torch.Generator | None) -> None:
    """Remove ``amount`` of the remaining weights uniformly at random (seeded, unlike prune.random_*)."""
    mask = current_mask(module).clone(memory_format=torch.contiguous_format)  # view(-1) below needs it
    alive = mask.flatten().nonzero().flatten()
    order = torch.randperm(alive.numel(), generator=generator)[:amount].to(alive.device)
    mask.view(-1)[alive[order]] = 0
    shrink_mask(module, "weight", mask)


def prune_baseline(graph: PruningGraph, method: str, sparsity: float | Mapping[str, float],
                   generator: torch.Generator | None = None) -> None:
    """Prune to ``sparsity`` (fraction of each layer's weights removed, or of all weights for the global
    method), in [0, 1)."""
    values = sparsity.values() if isinstance(sparsity, Mapping) else [sparsity]
    for s in values:
        if not 0 <= float(s) < 1:
            raise ValueError(f"sparsity must lie in [0, 1) (the fraction of weights removed), got {s}")
    sizes = {layer.name: layer.module.weight_orig.numel() if hasattr(layer.module, "weight_orig")
             else layer.module.weight.numel() for layer in graph.layers()}
    if isinstance(sparsity, Mapping):
        keep: Mapping[str, int] | int = {n: round((1 - float(s)) * sizes[n]) for n, s in sparsity.items()}
    elif method == "magnitude_global":
        keep = round((1 - float(sparsity)) * sum(sizes.values()))
    else:
        keep = {n: round((1 - float(sparsity)) * size) for n, size in sizes.items()}
    prune_to_counts(graph, method, keep, generator)
