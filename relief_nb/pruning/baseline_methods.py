"""The baselines NNrelief is compared with, as pruning methods (:mod:`relief_nb.pruning.methods` registers them):
magnitude (global or per layer), random, SNIP (Lee et al., 2019) and MagAct (magnitude times mean activation).
Each prunes unstructured, weight by weight, to a :class:`~relief_nb.pruning.budget.Budget`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core.masks import current_mask, raw_weight, shrink_mask
from ..core.modes import eval_mode
from ..core.precision import strict_fp32
from ..core.units import is_conv, is_transposed
from ..graph.structure import PruningGraph
from .budget import Budget, _check_call, _device, _keep_largest, _per_layer_plan, _remaining, _weight
from .statistics import all_finite

__all__ = ["MagActMethod", "MagnitudeMethod", "RandomMethod", "SnipMethod"]


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
            with eval_mode(graph.gm, no_grad=False) as model, torch.enable_grad(), strict_fp32():
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
                if isinstance(module, nn.Embedding):  # token ids: every table entry is read as it is
                    activity[layer] = torch.ones(module.num_embeddings, device=args[0].device)
                    return
                x = args[0].detach().abs()
                dims = (0, *range(2, x.ndim)) if is_conv(module) else tuple(range(x.ndim - 1))
                activity[layer] = x.mean(dim=dims)  # per input channel / feature
            return hook

        handles = [module.register_forward_pre_hook(recorder(layer)) for layer, module, _ in plan]
        try:
            with eval_mode(graph.gm) as model, strict_fp32():
                model(inputs.to(_device(graph)))
        finally:
            for h in handles:
                h.remove()
        out = []
        for layer, module, _ in plan:
            w = _weight(module)
            a = activity[layer].to(w.dtype)
            if is_transposed(module):  # weight (inputs, outputs, ...): input channel c is row c
                a = a.view(-1, *([1] * (w.ndim - 1)))
            elif is_conv(module):
                out_ch, per_group = w.shape[0], w.shape[1]
                group = torch.arange(out_ch, device=w.device) // (out_ch // module.groups)
                channel = group[:, None] * per_group + torch.arange(per_group, device=w.device)[None, :]
                a = a[channel].view(out_ch, per_group, *([1] * (w.ndim - 2)))
            out.append(w.abs() * a)
        return out
