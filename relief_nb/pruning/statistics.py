"""What the pass measures on the scoring batch: one forward with hooks that accumulate every layer's scores
(formulas in :mod:`relief_nb.core.scores`), each layer's per-feature input maxima (for the dead-unit rule) and the
branch maps of residual merges (for the residual rule); the one collector of the pass and of ``score_layers``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
import torch.fx as fx
from torch import nn

from ..core.batches import Batch, batch_size, call_model, fx_args, slice_batch
from ..core.general_scores import EmbeddingScoreAccumulator, scorer_for
from ..core.masks import effective
from ..core.outputs import output_tensors
from ..core.scores import DepthwiseScoreAccumulator, LinearScoreAccumulator, batch_abs_stats
from ..graph.structure import LayerNode, PruningGraph
from ..graph.trace import Merge

if TYPE_CHECKING:
    from .relief import ReliefConfig

__all__ = ["all_finite"]


def all_finite(t: torch.Tensor) -> bool:
    """True if ``t`` has no NaN or inf: a finite sum proves it in one pass; otherwise the exact element check."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


class _Statistics:
    """Forward hooks that accumulate scores, per-feature input maxima and merge-branch maps over chunks: the one
    scoring collector (the pass and :func:`score_layers` use it)."""

    def __init__(self, graph: PruningGraph, layers: Iterable[LayerNode], config: ReliefConfig,
                 merges: Iterable[Merge] = ()) -> None:
        self.graph = graph
        self.scorers: dict[str, object] = {}  # layer name -> its accumulator (relief_nb.core.scores.scorer_for)
        self.channel_max: dict[str, torch.Tensor] = {}
        self.merges = {m.node: m for m in merges}
        self.branch_maps: dict[str, list[torch.Tensor]] = {}
        self.handles: list = []
        for layer in layers:
            m = layer.module
            self.scorers[layer.name] = scorer_for(m, config.conv_aggregation)
            self.handles.append(m.register_forward_pre_hook(self._layer_hook(layer)))

    def _layer_hook(self, layer: LayerNode):
        def hook(module: nn.Module, args: tuple) -> None:
            scorer = self.scorers[layer.name]
            x = args[0]
            if isinstance(scorer, (DepthwiseScoreAccumulator, EmbeddingScoreAccumulator)):
                cmax = scorer.update(x, effective(module)) if layer.kind == "conv" else scorer.update(x)
            elif isinstance(scorer, LinearScoreAccumulator):  # a sequence (N, T, F): over batch and positions
                cmax = scorer.update(x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x)
            else:  # any other conv; the per-channel max |x| comes with the scores
                cmax = scorer.update(x, _dense_weight(effective(module), module.groups))
            if not torch.isfinite(cmax).all():  # amax propagates NaN and inf
                raise FloatingPointError(f"the activations entering layer {layer.name} contain NaN or inf; "
                                         "check the model's weights and the scoring batch")
            old = self.channel_max.get(layer.name)
            self.channel_max[layer.name] = cmax if old is None else torch.maximum(old, cmax)
        return hook

    def _record(self, merge: Merge, operands: list[torch.Tensor]) -> None:
        maps = [batch_abs_stats(x)[0] for x in operands]
        old = self.branch_maps.get(merge.node)
        self.branch_maps[merge.node] = maps if old is None else [a + b for a, b in zip(old, maps)]

    def run(self, model: nn.Module, batch: Batch, chunk_size: int) -> None:
        if self.merges:
            recorder = _MergeRecorder(model, self.graph, self)
            placeholders = [n for n in self.graph.gm.graph.nodes if n.op == "placeholder"]

            def forward(chunk: Batch):
                return recorder.run(*fx_args(chunk, placeholders))
        else:
            def forward(chunk: Batch):
                return call_model(model, chunk)
        try:
            for start in range(0, batch_size(batch), chunk_size):
                out = forward(slice_batch(batch, start, start + chunk_size))
                if not all(all_finite(t) for t in output_tensors(out)):  # a tensor, or a dict, tuple, ...
                    raise FloatingPointError("the model's output on the scoring batch contains NaN or inf")
        finally:
            for h in self.handles:
                h.remove()


class _MergeRecorder(fx.Interpreter):
    """Runs the traced graph on the model's own modules, recording the branches of the watched merges."""

    def __init__(self, model: nn.Module, graph: PruningGraph, stats: _Statistics) -> None:
        super().__init__(model, graph=graph.gm.graph)
        self.stats = stats

    def run_node(self, n: fx.Node):
        merge = self.stats.merges.get(n.name)
        if merge is not None:
            operands = [self.env[a] for a in n.all_input_nodes
                        if isinstance(self.env.get(a), torch.Tensor) and self.graph_axis(a) >= 0]
            self.stats._record(merge, operands)
        return super().run_node(n)

    def graph_axis(self, node: fx.Node) -> int:
        return self.stats.graph.out_axis.get(node.name, -1)


def _connection_scores(layer: LayerNode, stats: _Statistics) -> torch.Tensor:
    """The layer's scores from its accumulator, one row per unit: its incoming connections (a Linear layer's
    inputs; a conv filter's kernels on the input channels of its group, one for a depthwise conv), then its bias
    if it has one (formulas in :mod:`relief_nb.core.scores`)."""
    m = layer.module
    weight, bias = effective(m, "weight"), effective(m, "bias")
    groups = getattr(m, "groups", 1)
    scorer = stats.scorers[layer.name]
    if isinstance(scorer, (DepthwiseScoreAccumulator, EmbeddingScoreAccumulator)):  # a filter's one kernel; a table
        return scorer.scores(weight, bias)
    scores = scorer.scores(_dense_weight(weight, groups), bias)
    if groups > 1:  # the input channels of its group
        out, per_group = weight.shape[:2]
        cols = (torch.arange(out, device=scores.device) // (out // groups))[:, None] * per_group
        cols = cols + torch.arange(per_group, device=scores.device)
        kernel_scores = scores.gather(1, cols)
        scores = torch.cat([kernel_scores, scores[:, m.in_channels:]], dim=1)
    return scores


def _dense_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's weight as the equivalent dense one (zero kernels outside each filter's group), so the
    dense scorer serves depthwise and grouped convs; the zero kernels score 0 and are dropped after scoring."""
    if groups == 1:
        return weight
    out, per_group = weight.shape[:2]
    dense = weight.new_zeros(out, groups, per_group, *weight.shape[2:])
    group = torch.arange(out, device=weight.device) // (out // groups)
    dense[torch.arange(out, device=weight.device), group] = weight
    return dense.reshape(out, groups * per_group, *weight.shape[2:])
