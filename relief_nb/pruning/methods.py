"""Pruning methods behind one interface, chosen by name from a registry.

In the spirit of ``torch.nn.utils.prune``: a method computes masks for the weights of the model's prunable layers
(the Conv2d / Linear layers of its traced graph) and installs them with :func:`relief_nb.masks.shrink_mask`, so
masks only shrink: a removed weight never comes back. Pruning is unstructured (weight by weight) for the
baselines; biases are left alone. NNrelief (``relief``) decides its own budget; the baselines are given one::

    from relief_nb.methods import Budget, get_method
    budget = Budget.of(reference_graph)               # what NNrelief kept, per layer
    get_method("snip").prune(graph, x, y, budget, generator)

``graph`` is what :func:`relief_nb.structure.trace_model` or :func:`relief_nb.relief.trace_for_batch` returns;
methods that need a forward pass run the traced graph (``graph.gm``) on the model's own modules, in eval mode,
and leave every module's train / eval mode as they found it.

Registered methods (``list_methods()``; formulas in each class's docstring): ``relief``, ``magnitude_global``,
``magnitude_layer``, ``random``, ``snip``, ``magact``. :func:`register_method` adds one.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.masks import current_mask, raw_weight, shrink_mask
from ..core.modes import eval_mode
from ..graph.structure import PruningGraph
from .relief import ReliefConfig, all_finite, relief_prune

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


# ----------------------------------------------------------------------------------------------------- budget
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
    if tuple(inputs.shape[1:]) != tuple(graph.input_shape):
        raise ValueError(f"{name}: the batch has shape {tuple(inputs.shape)} but the model expects "
                         f"(N, {', '.join(map(str, graph.input_shape))})")
    if not all_finite(inputs):
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


# ---------------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class ReliefMethod:
    """NNrelief (Dekhovich et al. 2021): one pass of :func:`relief_nb.relief.relief_prune` with ``config``.

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


@dataclass(frozen=True)
class MagnitudeMethod:
    """Magnitude pruning (Han et al. 2015): saliency ``|w|``.

    ``per_layer=True`` (``magnitude_layer``): each layer keeps its ``budget.per_layer[layer]`` largest surviving
    ``|w|``. ``per_layer=False`` (``magnitude_global``): the model keeps its ``budget.total`` largest surviving
    ``|w|`` over all layers together (so per-layer counts are free; a per-layer budget only gives the total).
    """

    per_layer: bool = True
    name: str = ""
    label: str = ""
    needs_budget: ClassVar[bool] = True
    needs_inputs: ClassVar[bool] = False
    needs_targets: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", "magnitude_layer" if self.per_layer else "magnitude_global")
        if not self.label:
            object.__setattr__(self, "label", "magnitude (per layer)" if self.per_layer else "magnitude (global)")

    def prune(self, graph: PruningGraph, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
              budget: Budget | None = None, generator: torch.Generator | None = None) -> None:
        _check_call(self, graph, inputs, targets, budget)
        if self.per_layer:
            for layer, module, count in _per_layer_plan(self.name, graph, budget):
                _keep_largest([module], [_weight(module).abs()], count, f"{self.name}, layer {layer}")
            return
        modules = [layer.module for layer in graph.layers()]
        left = sum(_remaining(m) for m in modules)
        if budget.total > left:
            raise ValueError(f"{self.name}: cannot keep {budget.total} weights, {left} remain (masks only shrink)")
        _keep_largest(modules, [_weight(m).abs() for m in modules], budget.total, self.name)


@dataclass(frozen=True)
class RandomMethod:
    """Random pruning: each layer keeps ``budget.per_layer[layer]`` of its surviving weights, drawn uniformly
    (``torch.randperm`` with ``generator``: seeded, unlike ``prune.random_unstructured``)."""

    name: str = "random"
    label: str = "random"
    needs_budget: ClassVar[bool] = True
    needs_inputs: ClassVar[bool] = False
    needs_targets: ClassVar[bool] = False

    def prune(self, graph: PruningGraph, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None,
              budget: Budget | None = None, generator: torch.Generator | None = None) -> None:
        _check_call(self, graph, inputs, targets, budget)
        for _, module, count in _per_layer_plan(self.name, graph, budget):
            mask = current_mask(module).clone(memory_format=torch.contiguous_format)  # view(-1) below needs it
            alive = mask.flatten().nonzero().flatten()
            drop = torch.randperm(alive.numel(), generator=generator)[: alive.numel() - count].to(alive.device)
            mask.view(-1)[alive[drop]] = 0
            shrink_mask(module, "weight", mask)


class _SaliencyMethod:
    """A baseline that scores every surviving weight (:meth:`saliencies`, one tensor per layer of the plan) and
    keeps, per layer, the ``budget.per_layer[layer]`` largest."""

    name: str
    needs_budget: ClassVar[bool] = True
    needs_inputs: ClassVar[bool] = True
    needs_targets: ClassVar[bool] = False

    def saliencies(self, graph: PruningGraph, plan: list[tuple[str, nn.Module, int]], inputs: torch.Tensor,
                   targets: torch.Tensor | None) -> list[torch.Tensor]:
        raise NotImplementedError

    def prune(self, graph: PruningGraph, inputs: torch.Tensor | None, targets: torch.Tensor | None = None,
              budget: Budget | None = None, generator: torch.Generator | None = None) -> None:
        _check_call(self, graph, inputs, targets, budget)
        plan = _per_layer_plan(self.name, graph, budget)
        if not plan:
            return
        for (layer, module, count), saliency in zip(plan, self.saliencies(graph, plan, inputs, targets)):
            _keep_largest([module], [saliency], count, f"{self.name}, layer {layer}")


@dataclass(frozen=True)
class SnipMethod(_SaliencyMethod):
    """SNIP (Lee et al. 2019): saliency ``|w * dL/dw|``, with ``L`` the mean cross-entropy of the model (eval
    mode) on ``(inputs, targets)``, from one backward pass; per layer, the ``budget.per_layer[layer]`` surviving
    weights of largest saliency are kept.

    On a pruned layer, ``dL/dw`` is the gradient with respect to the effective weight ``w_orig * mask``; for a
    surviving weight ``w = w_orig``. Parameters' ``.grad`` are left untouched (``torch.autograd.grad``).
    """

    name: str = "snip"
    label: str = "SNIP"
    needs_targets: ClassVar[bool] = True

    def saliencies(self, graph: PruningGraph, plan: list[tuple[str, nn.Module, int]], inputs: torch.Tensor,
                   targets: torch.Tensor | None) -> list[torch.Tensor]:
        device = _device(graph)
        params = [raw_weight(module) for _, module, _ in plan]
        grad_flags = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(True)
            with eval_mode(graph.gm, no_grad=False) as model, torch.enable_grad():
                logits = model(inputs.to(device))
                if logits.ndim != 2 or not all_finite(logits):
                    raise ValueError(f"{self.name} needs finite logits (N, classes) from the model, got "
                                     f"{tuple(logits.shape)}{'' if all_finite(logits) else ' with NaN or inf'}")
                targets = targets.to(device=device, dtype=torch.long)
                if bool((targets < 0).any()) or bool((targets >= logits.shape[1]).any()):
                    raise ValueError(f"{self.name}: targets must be class indices in [0, {logits.shape[1]})")
                loss = F.cross_entropy(logits, targets)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            for p, flag in zip(params, grad_flags):
                p.requires_grad_(flag)
        return [(w.detach() * (torch.zeros_like(w) if g is None else g)).abs().contiguous()
                for w, g in zip(params, grads)]


@dataclass(frozen=True)
class MagActMethod(_SaliencyMethod):
    """Weight times activation, ShrinkBench's "MagAct" (Blalock et al. 2020): saliency ``|w_ij| * mean|a_j|``,
    with ``a_j`` the input the weight multiplies, averaged over the batch (and, for a conv, over the input
    channel's positions: ``mean |a|`` per input channel), from one forward pass in eval mode (forward pre-hooks
    on the graph's layers); per layer, the ``budget.per_layer[layer]`` surviving weights of largest saliency are
    kept. A grouped / depthwise conv's weight ``[o, i, kh, kw]`` multiplies input channel
    ``group(o) * in_channels_per_group + i``.
    """

    name: str = "magact"
    label: str = "MagAct"

    def saliencies(self, graph: PruningGraph, plan: list[tuple[str, nn.Module, int]], inputs: torch.Tensor,
                   targets: torch.Tensor | None) -> list[torch.Tensor]:
        activity: dict[str, torch.Tensor] = {}

        def recorder(layer: str):
            def hook(module: nn.Module, args: tuple) -> None:
                x = args[0].detach().abs()
                dims = (0, *range(2, x.ndim)) if isinstance(module, nn.Conv2d) else tuple(range(x.ndim - 1))
                activity[layer] = x.mean(dim=dims)  # per input channel / feature
            return hook

        handles = [module.register_forward_pre_hook(recorder(layer)) for layer, module, _ in plan]
        try:
            with eval_mode(graph.gm) as model:
                model(inputs.to(_device(graph)))
        finally:
            for h in handles:
                h.remove()
        out = []
        for layer, module, _ in plan:
            w = _weight(module)
            a = activity[layer].to(w.dtype)
            if isinstance(module, nn.Conv2d):
                out_ch, per_group = w.shape[0], w.shape[1]
                group = torch.arange(out_ch, device=w.device) // (out_ch // module.groups)
                channel = group[:, None] * per_group + torch.arange(per_group, device=w.device)[None, :]
                a = a[channel].view(out_ch, per_group, *([1] * (w.ndim - 2)))
            out.append(w.abs() * a)
        return out


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
