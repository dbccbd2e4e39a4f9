"""Baselines pruned to a given number of weights or sparsity: magnitude (global or per layer, Han et al. 2015)
and random. Weights are pruned one by one (unstructured); biases are left alone.

The implementations live in :mod:`relief_nb.pruning.methods` (one interface and a registry, with SNIP and MagAct
besides); these are the historical entry points, thin wrappers over it.

In an experiment (``ExperimentConfig.of(method=..., reference=<NNrelief run name>)``) each iteration prunes to
the per-layer (``magnitude_layer``, ``random``) or total (``magnitude_global``) number of weights NNrelief
kept at the same iteration, and retrains with the same budget.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..graph.structure import PruningGraph
from .methods import Budget, get_method

__all__ = ["BASELINES", "METHODS", "prune_baseline", "prune_to_counts"]

BASELINES = ("magnitude_global", "magnitude_layer", "random")
METHODS = ("relief", *BASELINES)  # what experiments run today (relief_nb.pruning.methods.list_methods() has them all)


def _check_method(method: str) -> None:
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r}; choose one of {BASELINES}")


def prune_to_counts(graph: PruningGraph, method: str, keep: Mapping[str, int] | int,
                    generator: torch.Generator | None = None) -> None:
    """Prune weights until each layer keeps ``keep[layer]`` (or, for ``magnitude_global``, the model keeps
    ``keep`` in total). Masks only shrink: asking to keep more than remains is an error."""
    _check_method(method)
    budget = Budget(per_layer=keep) if isinstance(keep, Mapping) else Budget(overall=keep)
    get_method(method).prune(graph, None, None, budget, generator)


def prune_baseline(graph: PruningGraph, method: str, sparsity: float | Mapping[str, float],
                   generator: torch.Generator | None = None) -> None:
    """Prune to ``sparsity`` (fraction of each layer's weights removed, or of all weights for the global
    method), in [0, 1)."""
    budget = Budget.from_sparsity(graph, sparsity, overall=method == "magnitude_global")
    _check_method(method)
    get_method(method).prune(graph, None, None, budget, generator)
