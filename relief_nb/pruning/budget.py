"""What a baseline is pruned to (:class:`Budget`: weights kept per layer, or in total), and the checks and helpers
every pruning method shares: inputs and targets validated in one line, per-layer plans, keeping the largest
saliencies."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.batches import as_spec, spec_of
from ..core.masks import current_mask, raw_weight, shrink_mask
from ..graph.structure import PruningGraph
from .statistics import all_finite

if TYPE_CHECKING:
    from .methods import PruningMethod

__all__ = ["Budget"]


def _count(value, what: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{what}: a weight count must be an integer, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{what}: a weight count must be an integer, got {value!r}") from None
    if n < 0:
        raise ValueError(f"{what}: cannot keep a negative number of weights ({n})")
    return n


def _weight_size(module: nn.Module) -> int:
    return raw_weight(module).numel()


def _remaining(module: nn.Module) -> int:
    return int((current_mask(module) != 0).sum())


@dataclass(frozen=True)
class Budget:
    """How many weights each named layer keeps after a pruning step (``per_layer``), or only how many the
    model's prunable layers keep in total (``overall``, enough for a global method). Give exactly one.

    Layers a per-layer budget does not name are left as they are. :attr:`total` is what a global method keeps.
    """

    per_layer: Mapping[str, int] | None = None
    overall: int | None = None

    def __post_init__(self) -> None:
        if (self.per_layer is None) == (self.overall is None):
            raise ValueError("a Budget takes either per_layer counts or an overall count (exactly one of them)")
        if self.per_layer is not None:
            if not isinstance(self.per_layer, Mapping):
                raise TypeError(f"per_layer must map layer names to counts, got {type(self.per_layer).__name__}")
            counts = {str(k): _count(v, f"layer {k}") for k, v in self.per_layer.items()}
            object.__setattr__(self, "per_layer", MappingProxyType(counts))
        else:
            object.__setattr__(self, "overall", _count(self.overall, "overall budget"))

    def __hash__(self) -> int:
        return hash((None if self.per_layer is None else tuple(self.per_layer.items()), self.overall))

    def __reduce__(self):  # picklable (a mappingproxy is not): Dask sends budgets to workers
        return type(self), (None if self.per_layer is None else dict(self.per_layer), self.overall)

    @property
    def total(self) -> int:
        return int(self.overall) if self.per_layer is None else sum(self.per_layer.values())

    @classmethod
    def of(cls, graph: PruningGraph) -> Budget:
        """What each of the graph's layers keeps now (its nonzero mask entries): e.g. NNrelief's reference run."""
        return cls(per_layer={layer.name: _remaining(layer.module) for layer in graph.layers()})

    @classmethod
    def from_sparsity(cls, graph: PruningGraph, sparsity: float | Mapping[str, float], overall: bool = False
                      ) -> Budget:
        """The budget that removes a fraction ``sparsity`` in [0, 1) of each layer's weights (a mapping: of the
        layers it names), counted on the layers' full sizes; ``overall=True`` with one fraction: of all
        weights together, as a total."""
        values = sparsity.values() if isinstance(sparsity, Mapping) else [sparsity]
        for s in values:
            if not 0 <= float(s) < 1:
                raise ValueError(f"sparsity must lie in [0, 1) (the fraction of weights removed), got {s}")
        sizes = {layer.name: _weight_size(layer.module) for layer in graph.layers()}
        if isinstance(sparsity, Mapping):
            _check_names(sparsity, sizes)
            return cls(per_layer={n: round((1 - float(s)) * sizes[n]) for n, s in sparsity.items()})
        if overall:
            return cls(overall=round((1 - float(sparsity)) * sum(sizes.values())))
        return cls(per_layer={n: round((1 - float(sparsity)) * size) for n, size in sizes.items()})


def _check_names(names, layers: Mapping[str, object]) -> None:
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"the budget names {unknown}, not layers of the graph; its layers: {list(layers)}")


def _check_call(method: PruningMethod, graph: PruningGraph, inputs, targets, budget) -> None:
    """The checks every method makes before touching a mask."""
    if not (hasattr(graph, "layers") and hasattr(graph, "gm")):
        raise TypeError(f"{method.name}: graph must be what trace_model / trace_for_batch returns, "
                        f"got {type(graph).__name__}")
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"{method.name}: budget must be a Budget (e.g. Budget.of(reference_graph)), "
                        f"got {type(budget).__name__}")
    if method.needs_budget and budget is None:
        raise ValueError(f"{method.name} needs a budget: how many weights to keep, e.g. "
                         "Budget.of(reference_graph) (what NNrelief kept) or Budget(per_layer={...})")
    if not method.needs_budget and budget is not None:
        raise ValueError(f"{method.name} decides its own budget; pass budget=None")
    if budget is not None and budget.per_layer is not None:
        _check_names(budget.per_layer, {layer.name: None for layer in graph.layers()})
    if method.needs_inputs:
        _check_inputs(method.name, graph, inputs)
    if method.needs_targets:
        _check_targets(method.name, inputs, targets)


def _check_inputs(name: str, graph: PruningGraph, inputs) -> None:
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"{name} scores on a batch: inputs must be a torch.Tensor (N, ...), "
                        f"got {type(inputs).__name__}")
    if inputs.ndim == 0 or inputs.shape[0] == 0:
        raise ValueError(f"{name}: the batch is empty; pass N >= 1 training examples")
    if spec_of(inputs) != as_spec(graph.input_shape):
        raise ValueError(f"{name}: the batch is {spec_of(inputs)} but the model expects {as_spec(graph.input_shape)}")
    if inputs.is_floating_point() and not all_finite(inputs):
        raise ValueError(f"{name}: the batch contains NaN or inf")


def _check_targets(name: str, inputs: torch.Tensor, targets) -> None:
    if targets is None:
        raise ValueError(f"{name} needs the batch's labels: pass targets (N,) class indices")
    if not isinstance(targets, torch.Tensor) or targets.ndim != 1 or targets.dtype.is_floating_point \
            or targets.dtype == torch.bool or targets.shape[0] != inputs.shape[0]:
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"{name}: targets must be {inputs.shape[0]} integer class indices (N,), got {shape}")


def _device(graph: PruningGraph) -> torch.device:
    param = next(graph.gm.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _per_layer_plan(name: str, graph: PruningGraph, budget: Budget) -> list[tuple[str, nn.Module, int]]:
    """(layer, module, count to keep) for each layer the budget names, in the graph's order, checked."""
    if budget.per_layer is None:
        raise ValueError(f"{name} prunes each layer to its own count: give Budget(per_layer={{...}}) "
                         "(e.g. Budget.of(reference_graph)), not only an overall count")
    plan = []
    for layer in graph.layers():
        if layer.name in budget.per_layer:
            count, left = budget.per_layer[layer.name], _remaining(layer.module)
            if count > left:
                raise ValueError(f"layer {layer.name}: cannot keep {count} weights, {left} remain "
                                 "(masks only shrink)")
            plan.append((layer.name, layer.module, count))
    return plan


def _keep_largest(modules: Sequence[nn.Module], saliencies: Sequence[torch.Tensor], keep: int, what: str) -> None:
    """Keep the ``keep`` highest-saliency surviving weights over ``modules`` together (one layer, or all of them
    for a global method); ``torch.topk`` breaks ties. Every saliency has its weight's (logical) shape."""
    scores = torch.cat([s.flatten() for s in saliencies])
    alive = torch.cat([(current_mask(m) != 0).flatten() for m in modules]).nonzero().flatten()
    if not all_finite(scores[alive]):
        raise FloatingPointError(f"{what}: the saliency of a surviving weight is NaN or inf")
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept[alive[scores[alive].topk(keep).indices]] = True
    for m, s, part in zip(modules, saliencies, kept.split([s.numel() for s in saliencies])):
        shrink_mask(m, "weight", part.view(s.shape))


def _weight(module: nn.Module) -> torch.Tensor:
    """The unmasked weight (``weight_orig`` once pruned), detached and contiguous (channels-last conv weights
    are laid out otherwise; every mask here is built in the logical order)."""
    return raw_weight(module).detach().contiguous()
