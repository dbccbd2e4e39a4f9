"""One NNrelief pruning pass: score -> select -> dead units -> residual rule -> backward pruning.

The pass follows the traced :class:`~relief_nb.structure.PruningGraph`, so one implementation serves every
architecture:

1. Conv layers are scored front to back on the activations of the network as it was before this pass
   (one forward over the scoring batch, hooks accumulate what :mod:`relief_nb.scores` needs).
2. Selection (:mod:`relief_nb.selection`) keeps, per filter, the kernels (and bias) carrying a fraction
   ``alpha_conv`` of its signal. A unit whose post-activation output is zero on the whole batch loses all its
   incoming connections and its bias. In a residual block, with ``r_k`` / ``s_k`` the L2 norms of the
   batch-mean ``|BN2(conv2 x)|_k`` and ``|shortcut(x)|_k`` maps: ``r_k / (r_k + s_k) < 1 - alpha_conv``
   removes conv2's filter k, ``s_k / (r_k + s_k) < 1 - alpha_conv`` masks shortcut channel k.
3. The Linear layers are then scored on features of the conv-pruned network and selected with ``alpha_fc``.
4. Backward pruning, from the output to the input: a unit none of whose outgoing connections survive loses
   its incoming weights, its bias and its BatchNorm channel (Linear -> Linear, across the flatten to conv
   channels, conv -> conv, and through residual blocks, where a block input channel survives while conv1
   reads it or its shortcut is open).

Masks are computed in full before anything is committed: if any step fails the model's masks are restored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .masks import current_mask, mask_snapshot, restore_masks, shrink_mask
from .scores import (
    CONV_AGGREGATIONS,
    ConvAggregation,
    ConvScoreAccumulator,
    LinearScoreAccumulator,
    batch_abs_stats,
)
from .selection import SELECTION_RULES, SelectionRule, check_alpha, select
from .structure import BlockNode, LayerNode, PruningGraph, trace_model

__all__ = ["ReliefConfig", "all_finite", "effective", "relief_prune"]

_CONV_CHUNK = 250  # default scoring images per forward for models with conv layers (see ReliefConfig.chunk_size)


@dataclass(frozen=True)
class ReliefConfig:
    """Settings of one pruning pass. Defaults follow the paper; :meth:`authors_code` mirrors their code."""

    alpha_conv: float = 0.9
    alpha_fc: float = 0.95
    conv_aggregation: ConvAggregation = "sample_l2"
    selection: SelectionRule = "paper"
    dead_units: bool = True
    residual_rule: bool = True
    backward_pruning: bool = True
    # scoring images per forward; None: 250 for models with conv layers, whose per-chunk Gram tiles then stay in
    # cache, and the whole batch for Linear-only models, where per-chunk overheads dominate (both measured
    # fastest on CPU with benchmarks/bench_prune_pass.py --chunk-size)
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        check_alpha(self.alpha_conv, "alpha_conv")
        check_alpha(self.alpha_fc, "alpha_fc")
        if self.conv_aggregation not in CONV_AGGREGATIONS:
            raise ValueError(f"conv_aggregation must be one of {CONV_AGGREGATIONS}, got {self.conv_aggregation!r}")
        if self.selection not in SELECTION_RULES:
            raise ValueError(f"selection must be one of {SELECTION_RULES}, got {self.selection!r}")
        if self.chunk_size is not None and int(self.chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {self.chunk_size}")

    @classmethod
    def authors_code(cls, family: str, alpha_conv: float, alpha_fc: float) -> ReliefConfig:
        """The authors' code: batch-mean maps (L1 for LeNet-5, L2 otherwise) and their selection rule."""
        aggregation = "mean_l1" if family == "lenet" else "mean_l2"
        return cls(alpha_conv, alpha_fc, conv_aggregation=aggregation, selection="code")

    def to_dict(self) -> dict:
        return asdict(self)


def all_finite(t: torch.Tensor) -> bool:
    """True if ``t`` has no NaN or inf: a finite sum proves it in one pass; otherwise the exact element check."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def effective(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The parameter as the forward sees it (``orig * mask`` for a pruned one), or None if absent."""
    if hasattr(module, f"{name}_orig"):
        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")
    return getattr(module, name, None)


class _Statistics:
    """Forward hooks that accumulate scores, per-channel input maxima and residual maps over chunks."""

    def __init__(self, graph: PruningGraph, layers: Iterable[LayerNode], config: ReliefConfig) -> None:
        self.graph = graph
        self.scorers: dict[str, ConvScoreAccumulator | LinearScoreAccumulator] = {}
        self.channel_max: dict[str, torch.Tensor] = {}
        self.residual: dict[str, dict[str, torch.Tensor]] = {}
        self.handles: list = []
        for layer in layers:
            m = layer.module
            if isinstance(m, nn.Conv2d):
                self.scorers[layer.name] = ConvScoreAccumulator(m, config.conv_aggregation)
            else:
                self.scorers[layer.name] = LinearScoreAccumulator(m)
            self.handles.append(m.register_forward_pre_hook(self._layer_hook(layer)))
        if config.residual_rule:
            for block in graph.blocks():
                self.residual[block.name] = {}
                self.handles.append(block.module.bn2.register_forward_hook(self._map_hook(block, "residual")))
                self.handles.append(block.module.shortcut.register_forward_hook(self._map_hook(block, "shortcut")))

    def _layer_hook(self, layer: LayerNode):
        def hook(module: nn.Module, args: tuple) -> None:
            scorer = self.scorers[layer.name]
            if isinstance(scorer, ConvScoreAccumulator):
                cmax = scorer.update(args[0], effective(module))  # the per-channel max |x| comes with the scores
            else:  # the max |x| of each input unit's features (one per channel after a flatten)
                cmax = scorer.update(args[0]).view(layer.in_units, layer.features_per_channel).amax(1)
            if not torch.isfinite(cmax).all():  # amax propagates NaN and inf
                raise FloatingPointError(f"the activations entering layer {layer.name} contain NaN or inf; "
                                         "check the model's weights and the scoring batch")
            old = self.channel_max.get(layer.name)
            self.channel_max[layer.name] = cmax if old is None else torch.maximum(old, cmax)
        return hook

    def _map_hook(self, block: BlockNode, key: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            s = batch_abs_stats(out)[0]
            if key == "shortcut":
                s.mul_(block.module.shortcut_mask.view(-1, 1, 1))
            store = self.residual[block.name]
            store[key] = s if key not in store else store[key] + s
        return hook

    def run(self, model: nn.Module, batch: torch.Tensor, chunk_size: int) -> None:
        try:
            for start in range(0, batch.shape[0], chunk_size):
                out = model(batch[start:start + chunk_size])
                if not all_finite(out):
                    raise FloatingPointError("the model's output on the scoring batch contains NaN or inf")
        finally:
            for h in self.handles:
                h.remove()


def _layer_keep(layer: LayerNode, stats: _Statistics, alpha: float, rule: SelectionRule) -> dict[str, torch.Tensor]:
    """Keep-masks for the layer's weight (and bias) from its scores."""
    m = layer.module
    weight, bias = effective(m, "weight"), effective(m, "bias")
    scores = stats.scorers[layer.name].scores(weight, bias)
    keep = select(scores, alpha, rule)
    n_in = weight.shape[1]
    w_keep = keep[:, :n_in]
    if weight.ndim == 4:
        w_keep = w_keep[:, :, None, None].expand_as(weight)
    result = {"weight": w_keep}
    if bias is not None:
        result["bias"] = keep[:, n_in]
    return result


def _kill_units(keep: dict[str, torch.Tensor], dead: torch.Tensor) -> None:
    keep["weight"] = keep["weight"] & ~dead.view(-1, *([1] * (keep["weight"].ndim - 1)))
    if "bias" in keep:
        keep["bias"] = keep["bias"] & ~dead


def _commit(layer: LayerNode, keep: dict[str, torch.Tensor]) -> None:
    for name, k in keep.items():
        shrink_mask(layer.module, name, k)


def remove_units(layer: LayerNode, remove: torch.Tensor) -> None:
    """Remove the layer's units flagged in ``remove``: incoming weights and bias (BatchNorm follows later)."""
    if not bool(remove.any()):
        return
    m = layer.module
    keep = {"weight": torch.ones_like(m.weight_orig if hasattr(m, "weight_orig") else m.weight, dtype=torch.bool)}
    if m.bias is not None or hasattr(m, "bias_orig"):
        keep["bias"] = torch.ones(layer.out_units, dtype=torch.bool, device=remove.device)
    _kill_units(keep, remove)
    _commit(layer, keep)


def reads_inputs(layer: LayerNode) -> torch.Tensor:
    """Boolean per input unit: does any surviving connection of ``layer`` read it?"""
    mask = current_mask(layer.module, "weight") != 0
    if mask.ndim == 4:
        return mask.any(dim=(0, 2, 3))
    return mask.reshape(mask.shape[0], layer.in_units, layer.features_per_channel).any(dim=(0, 2))


def alive_units(layer: LayerNode) -> torch.Tensor:
    """Boolean per unit: does it keep an incoming connection or its bias?"""
    m = layer.module
    alive = (current_mask(m, "weight") != 0).reshape(layer.out_units, -1).any(dim=1)
    if getattr(m, "bias", None) is not None:
        alive |= current_mask(m, "bias") != 0
    return alive


def _dead_from_consumer(stats: _Statistics, consumer: LayerNode | BlockNode | None) -> torch.Tensor | None:
    """Units whose post-activation output is zero on the whole batch, as the next layer saw its input."""
    if isinstance(consumer, LayerNode) and consumer.name in stats.channel_max:
        return stats.channel_max[consumer.name] == 0
    return None  # a residual stream or the network's output: no dead-unit rule


def _residual_rule(block: BlockNode, stats: _Statistics, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(filters of conv2 to remove, shortcut channels to mask) by the residual-dominance rule."""
    maps = stats.residual[block.name]
    r = maps["residual"].flatten(1).norm(dim=1)
    s = maps["shortcut"].flatten(1).norm(dim=1)
    total = r + s
    safe = torch.where(total > 0, total, torch.ones_like(total))
    valid = total > 0
    return valid & (r / safe < 1 - alpha), valid & (s / safe < 1 - alpha)


def _backward_sweep(graph: PruningGraph) -> None:
    used: torch.Tensor | None = None  # units of the current node that something downstream reads
    for node in reversed(graph.nodes):
        if isinstance(node, LayerNode):
            if used is not None:
                remove_units(node, ~used)
            used = reads_inputs(node)
            continue
        block = node.module
        if used is not None:
            remove_units(node.conv2, ~used)
            block.shortcut_mask.mul_(used.to(block.shortcut_mask.dtype))
        remove_units(node.conv1, ~reads_inputs(node.conv2))
        shortcut_open = block.shortcut_mask[node.pad: node.pad + node.in_units] != 0
        used = reads_inputs(node.conv1) | shortcut_open


def _mask_removed_batchnorm(graph: PruningGraph) -> None:
    """A unit with no incoming weight and no bias is removed: its BatchNorm channel is masked too."""
    for layer in graph.layers():
        if layer.bn is None:
            continue
        removed = ~alive_units(layer)
        if bool(removed.any()) or hasattr(layer.bn, "weight_mask"):
            for name in ("weight", "bias"):
                shrink_mask(layer.bn, name, ~removed)


def _check_inputs(model: nn.Module, batch: torch.Tensor, graph: PruningGraph) -> None:
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"the scoring batch must be a torch.Tensor, got {type(batch).__name__}")
    if batch.ndim == 0 or batch.shape[0] == 0:
        raise ValueError("the scoring batch is empty; pass N >= 1 training images (the paper uses N = 1000)")
    if tuple(batch.shape[1:]) != tuple(graph.input_shape):
        raise ValueError(f"the scoring batch has shape {tuple(batch.shape)} but the model expects "
                         f"(N, {', '.join(map(str, graph.input_shape))})")
    if not all_finite(batch):
        raise ValueError("the scoring batch contains NaN or inf")
    for layer in graph.layers():
        for name in ("weight", "bias"):
            p = effective(layer.module, name)
            if p is not None and not all_finite(p):
                raise FloatingPointError(f"{name} of layer {layer.name} contains NaN or inf; prune a trained, "
                                         "finite model")


def trace_for_batch(model: nn.Module, batch: torch.Tensor) -> PruningGraph:
    """Trace ``model`` with the per-example shape of ``batch``, turning a shape mismatch into a clear error."""
    if not isinstance(batch, torch.Tensor) or batch.ndim < 2 or batch.shape[0] == 0:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ValueError(f"the scoring batch must be a non-empty tensor (N, ...), got {shape}")
    try:
        return trace_model(model, tuple(batch.shape[1:]))
    except RuntimeError as err:
        raise ValueError(f"the scoring batch's example shape {tuple(batch.shape[1:])} does not fit the model: "
                         f"{err}") from err


@torch.no_grad()
def relief_prune(
    model: nn.Module,
    batch: torch.Tensor,
    config: ReliefConfig | None = None,
    graph: PruningGraph | None = None,
) -> PruningGraph:
    """Run one NNrelief pruning pass on ``model`` in place, scoring on ``batch`` (N, C, H, W).

    Returns the model's :class:`PruningGraph` (traced now unless given), useful for metrics. Nothing is
    committed if any step fails.
    """
    config = config or ReliefConfig()
    graph = graph or trace_for_batch(model, batch)
    batch = batch.to(next(model.parameters()).device)
    _check_inputs(model, batch, graph)
    snapshot = mask_snapshot(model)
    was_training = model.training
    model.eval()
    try:
        layers = graph.layers()
        convs = [x for x in layers if x.kind == "conv"]
        linears = [x for x in layers if x.kind == "linear"]
        chunk = config.chunk_size or (_CONV_CHUNK if convs else batch.shape[0])
        stats = _Statistics(graph, layers, config)
        stats.run(model, batch, chunk)
        keeps: dict[str, dict[str, torch.Tensor]] = {}
        consumers: dict[str, LayerNode | BlockNode | None] = {}
        for i, node in enumerate(graph.nodes):
            nxt = graph.nodes[i + 1] if i + 1 < len(graph.nodes) else None
            if isinstance(node, BlockNode):
                consumers[node.conv1.name], consumers[node.conv2.name] = node.conv2, None
            else:
                consumers[node.name] = nxt

        def select_layers(group: list[LayerNode], st: _Statistics, alpha: float) -> None:
            for layer in group:
                keep = _layer_keep(layer, st, alpha, config.selection)
                dead = _dead_from_consumer(st, consumers[layer.name]) if config.dead_units else None
                if dead is not None and bool(dead.any()):
                    _kill_units(keep, dead)
                keeps[layer.name] = keep

        select_layers(convs, stats, config.alpha_conv)
        if config.residual_rule:
            for block in graph.blocks():
                drop_filters, close_shortcut = _residual_rule(block, stats, config.alpha_conv)
                _kill_units(keeps[block.conv2.name], drop_filters)
                block.module.shortcut_mask.mul_((~close_shortcut).to(block.module.shortcut_mask.dtype))
        for layer in convs:
            _commit(layer, keeps[layer.name])
        # a filter removed above (dead-unit or residual rule) must be silent before the classifier is scored: its
        # BatchNorm would otherwise still emit relu(beta - gamma mu / sqrt(var + eps)) on the second forward
        _mask_removed_batchnorm(graph)
        if linears:
            if convs:  # the classifier is scored on features of the conv-pruned network
                stats = _Statistics(graph, linears, config)
                stats.run(model, batch, chunk)
            select_layers(linears, stats, config.alpha_fc)
            for layer in linears:
                _commit(layer, keeps[layer.name])
        if config.backward_pruning:
            _backward_sweep(graph)
        _mask_removed_batchnorm(graph)
    except BaseException:
        restore_masks(model, snapshot)
        raise
    finally:
        model.train(was_training)
    return graph
