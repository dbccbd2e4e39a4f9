"""The model's structure for pruning: the names the rest of the package (and users) import.

The tracer itself is :mod:`relief_nb.graph` (``torch.fx``); ``trace_model`` / ``PruningGraph`` / ``LayerNode``
are its entry point and types under their historical names.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from ..core.batches import BatchSpec
from .trace import GraphLayer, ModelGraph, UnsupportedModuleError, trace_graph

__all__ = ["LayerNode", "PruningGraph", "UnsupportedModuleError", "trace_model"]

LayerNode = GraphLayer
PruningGraph = ModelGraph


def trace_model(model: nn.Module, input_shape: tuple[int, ...] | BatchSpec, ignore: Iterable[str] = (),
                cache: bool = True) -> PruningGraph:
    """Trace ``model`` for examples of ``input_shape`` (see :func:`relief_nb.graph.trace_graph`)."""
    return trace_graph(model, input_shape, ignore, cache)
