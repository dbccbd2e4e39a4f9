"""Pruning methods behind one interface, chosen by name from a registry.

In the spirit of ``torch.nn.utils.prune``: a method computes masks for the weights of the model's prunable layers
(the Conv2d / Linear layers of its traced graph) and installs them with :func:`relief_nb.core.masks.shrink_mask`, so
masks only shrink: a removed weight never comes back. Pruning is unstructured (weight by weight) for the
baselines; biases are left alone. NNrelief (``relief``) decides its own budget; the baselines are given one::

    from relief_nb import Budget, get_method
    budget = Budget.of(reference_graph)               # what NNrelief kept, per layer
    get_method("snip").prune(graph, x, y, budget, generator)

``graph`` is what :func:`relief_nb.trace_model` or :func:`relief_nb.trace_for_batch` returns; methods that need a
forward pass run the traced graph (``graph.gm``) on the model's own modules, in eval mode, and leave every
module's train / eval mode as they found it.

This module holds the interface, NNrelief's method and the registry; the budget and the checks every method shares
are in :mod:`.budget`, the baselines in :mod:`.baseline_methods`. Registered methods (``list_methods()``; formulas
in each class's docstring): ``relief``, ``magnitude_global``,
``magnitude_layer``, ``random``, ``snip``, ``magact``. :func:`register_method` adds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Protocol, runtime_checkable

import torch

from ..core.modes import eval_mode
from ..graph.structure import PruningGraph
from .baseline_methods import MagActMethod, MagnitudeMethod, RandomMethod, SnipMethod
from .budget import Budget, _check_call
from .relief import ReliefConfig, relief_prune

__all__ = [
    "METHODS",
    "Budget",
    "MagActMethod",
    "MagnitudeMethod",
    "PruningMethod",
    "RandomMethod",
    "ReliefMethod",
    "SnipMethod",
    "get_method",
    "list_methods",
    "register_method",
]


# -------------------------------------------------------------------------------------------------- interface
@runtime_checkable
class PruningMethod(Protocol):
    """One pruning step on the graph's layers, in place; masks only shrink.

    ``needs_budget``: the step is given how many weights to keep (a :class:`Budget`); NNrelief decides its own
    and must be given None. ``needs_inputs`` / ``needs_targets``: it scores on a batch (N, ...) / its labels (N,).
    """

    name: str
    label: str
    needs_budget: bool
    needs_inputs: bool
    needs_targets: bool

    def prune(self, graph: PruningGraph, inputs: torch.Tensor | None, targets: torch.Tensor | None = None,
              budget: Budget | None = None, generator: torch.Generator | None = None) -> None: ...


# ---------------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class ReliefMethod:
    """NNrelief (Dekhovich et al. 2021): one pass of :func:`relief_nb.pruning.relief.relief_prune` with ``config``.

    Per unit, the connections whose share of its signal ``s_ij = E|a_j w_ij| / sum_k E|a_k w_kj|`` (plus the
    bias) add up to ``alpha`` are kept (paper defaults: ``alpha_conv`` 0.9, ``alpha_fc`` 0.95; see
    docs/method.md). It decides its own budget: ``budget`` must be None.
    """

    config: ReliefConfig = field(default_factory=ReliefConfig)
    name: str = "relief"
    label: str = "NNrelief"
    needs_budget: ClassVar[bool] = False
    needs_inputs: ClassVar[bool] = True
    needs_targets: ClassVar[bool] = False

    def prune(self, graph: PruningGraph, inputs: torch.Tensor | None, targets: torch.Tensor | None = None,
              budget: Budget | None = None, generator: torch.Generator | None = None) -> None:
        _check_call(self, graph, inputs, targets, budget)
        with eval_mode(graph.gm, no_grad=False) as model:  # restores each module's own mode afterwards
            relief_prune(model, inputs, self.config, graph)


# --------------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, PruningMethod] = {}
METHODS: Mapping[str, PruningMethod] = MappingProxyType(_REGISTRY)  # name -> method, read-only, live


def register_method(method: PruningMethod, replace: bool = False) -> PruningMethod:
    """Add ``method`` to the registry under ``method.name`` (``replace=True`` to overwrite); returns it."""
    for attr, kind in (("name", str), ("label", str), ("needs_budget", bool), ("needs_inputs", bool),
                       ("needs_targets", bool)):
        if not isinstance(getattr(method, attr, None), kind):
            raise TypeError(f"a pruning method needs a {kind.__name__} attribute {attr!r}; "
                            f"{type(method).__name__} has {getattr(method, attr, None)!r}")
    if not callable(getattr(method, "prune", None)):
        raise TypeError(f"a pruning method needs a prune(graph, inputs, targets, budget, generator) method; "
                        f"{type(method).__name__} has none")
    if not method.name:
        raise ValueError("a pruning method's name cannot be empty")
    if method.name in _REGISTRY and not replace:
        raise ValueError(f"a pruning method named {method.name!r} is already registered (replace=True overwrites)")
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> PruningMethod:
    """The registered method called ``name`` (for NNrelief with other settings: ``ReliefMethod(config)``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown pruning method {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def list_methods() -> tuple[str, ...]:
    """The registered methods' names."""
    return tuple(_REGISTRY)


for _method in (ReliefMethod(), MagnitudeMethod(per_layer=False), MagnitudeMethod(per_layer=True), RandomMethod(),
                SnipMethod(), MagActMethod()):
    register_method(_method)
del _method
