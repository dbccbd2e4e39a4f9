"""One NNrelief pruning pass: score -> select -> dead units -> residual rule -> backward pruning.

The pass follows the model's traced dependency graph (:mod:`relief_nb.graph`, ``torch.fx``), so one
implementation serves every architecture it can trace: chains, residual additions, concatenations, depthwise
convs, sequences.

1. Conv layers are scored on the activations of the network as it was before this pass (one forward over the
   scoring batch; hooks accumulate what :mod:`relief_nb.scores` needs). A grouped / depthwise conv's filter has
   the input channels of its group as connections (scored as the equivalent dense conv, whose other kernels
   are zero and never kept).
2. Selection (:mod:`relief_nb.selection`) keeps, per filter, the kernels (and bias) carrying a fraction
   ``alpha_conv`` of its signal. Dead units (paper): a unit whose output is zero on the whole batch wherever a
   layer reads it loses all its incoming connections and its bias. A unit that reaches a merge (residual sum,
   ``cat`` of tokens, LayerNorm), an ignored layer or the output is never declared dead: there its own silence
   does not silence what is read.
3. Residual rule (paper, for a ResNet block; generalised to every two-way addition, our extension): per channel
   k of the sum, with ``r_k`` the L2 norm of the batch-mean ``|branch|_k`` map of each branch, a branch whose
   share ``r_k / sum r`` is below ``1 - alpha_conv`` is cut for that channel: its conv's filter k is removed
   (the residual branch, or a 1x1 projection shortcut), or its shortcut mask is closed (option A); an identity
   shortcut has nothing to cut.
4. The BatchNorm of every unit removed so far is masked, then the Linear layers are scored on features of the
   conv-pruned network and selected with ``alpha_fc`` (with the same dead-unit and residual rules on Linear
   merges, e.g. a transformer's MLP residual).
5. Backward pruning over the graph, from the output to the input: a unit none of whose outgoing connections
   survive loses its incoming weights, its bias and its BatchNorm / LayerNorm channel. A channel of a residual
   sum stays while anything downstream reads it, so a channel is removed from a residual group only when every
   branch gives it up and nothing reads it; a gate (option-A mask) channel nobody reads is closed.

Masks are computed in full before anything is committed: if any step fails the model's masks are restored.
The model is traced, and anything unsupported refused, before any mask changes.

:func:`score_layers` gives the scores of step 1 / 4 without pruning (the same collector, :class:`_Statistics`).
A pass warns (:class:`ReliefWarning`) when its scoring batch is constant, so that the scores it measures mean
nothing, and when it removes more than 90 % of the weights that remained before it.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
import torch.fx as fx
from torch import nn

from ..core.masks import (
    current_mask,
    effective,
    is_pruned,
    kept_count,
    mask_snapshot,
    raw_weight,
    restore_masks,
    shrink_mask,
)
from ..core.modes import eval_mode
from ..core.scores import (
    CONV_AGGREGATIONS,
    ConvAggregation,
    ConvScoreAccumulator,
    DepthwiseScoreAccumulator,
    LinearScoreAccumulator,
    batch_abs_stats,
)
from ..core.selection import SELECTION_RULES, SelectionRule, check_alpha, select
from ..graph.structure import LayerNode, PruningGraph, trace_model
from ..graph.trace import Gate, Merge, alive_units

__all__ = ["ReliefConfig", "ReliefWarning", "alive_units", "all_finite", "effective", "relief_prune", "score_layers"]

_CONV_CHUNK = 250  # default scoring images per forward for models with conv layers (see ReliefConfig.chunk_size)
_LARGE_REMOVAL = 0.9  # a pass that removes more than this fraction of the remaining weights warns


class ReliefWarning(UserWarning):
    """A pruning pass did something a user would probably not expect (a constant scoring batch, a pass that
    removes almost every remaining weight)."""


def _warn(message: str) -> None:
    """Emit a :class:`ReliefWarning` attributed to the first caller outside relief_nb (and torch's decorators)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in ("relief_nb", "torch"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, ReliefWarning, stacklevel=level)


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


class _Statistics:
    """Forward hooks that accumulate scores, per-feature input maxima and merge-branch maps over chunks: the one
    scoring collector (the pass and :func:`score_layers` use it)."""

    def __init__(self, graph: PruningGraph, layers: Iterable[LayerNode], config: ReliefConfig,
                 merges: Iterable[Merge] = ()) -> None:
        self.graph = graph
        self.scorers: dict[str, ConvScoreAccumulator | LinearScoreAccumulator] = {}
        self.channel_max: dict[str, torch.Tensor] = {}
        self.merges = {m.node: m for m in merges}
        self.branch_maps: dict[str, list[torch.Tensor]] = {}
        self.handles: list = []
        for layer in layers:
            m = layer.module
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels:
                self.scorers[layer.name] = DepthwiseScoreAccumulator(m, config.conv_aggregation)
            elif isinstance(m, nn.Conv2d):
                self.scorers[layer.name] = ConvScoreAccumulator(m, config.conv_aggregation)
            else:
                self.scorers[layer.name] = LinearScoreAccumulator(m)
            self.handles.append(m.register_forward_pre_hook(self._layer_hook(layer)))

    def _layer_hook(self, layer: LayerNode):
        def hook(module: nn.Module, args: tuple) -> None:
            scorer = self.scorers[layer.name]
            x = args[0]
            if isinstance(scorer, DepthwiseScoreAccumulator):
                cmax = scorer.update(x, effective(module))
            elif isinstance(scorer, ConvScoreAccumulator):
                # the per-channel max |x| comes with the scores
                cmax = scorer.update(x, _dense_weight(effective(module), module.groups))
            else:  # per input feature; a sequence (N, T, F) is scored over batch and positions
                cmax = scorer.update(x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x)
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

    def run(self, model: nn.Module, batch: torch.Tensor, chunk_size: int) -> None:
        forward = _MergeRecorder(model, self.graph, self).run if self.merges else model
        try:
            for start in range(0, batch.shape[0], chunk_size):
                out = forward(batch[start:start + chunk_size])
                if not all_finite(out):
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
    if it has one (formulas in :mod:`relief_nb.scores`)."""
    m = layer.module
    weight, bias = effective(m, "weight"), effective(m, "bias")
    groups = getattr(m, "groups", 1)
    scorer = stats.scorers[layer.name]
    if isinstance(scorer, DepthwiseScoreAccumulator):  # one connection per filter: its kernel
        return scorer.scores(weight, bias)
    scores = scorer.scores(_dense_weight(weight, groups), bias)
    if groups > 1:  # the input channels of its group
        out, per_group = weight.shape[:2]
        cols = (torch.arange(out, device=scores.device) // (out // groups))[:, None] * per_group
        cols = cols + torch.arange(per_group, device=scores.device)
        kernel_scores = scores.gather(1, cols)
        scores = torch.cat([kernel_scores, scores[:, m.in_channels:]], dim=1)
    return scores


def _layer_keep(layer: LayerNode, scores: torch.Tensor, alpha: float, rule: SelectionRule) -> dict[str, torch.Tensor]:
    """Keep-masks for the layer's weight (and bias) from its connection scores (:func:`_connection_scores`)."""
    keep = select(scores, alpha, rule)
    shape = raw_weight(layer.module).shape
    n_in = shape[1]
    w_keep = keep[:, :n_in]
    if len(shape) == 4:
        w_keep = w_keep[:, :, None, None].expand(shape)
    result = {"weight": w_keep}
    if scores.shape[1] > n_in:
        result["bias"] = keep[:, n_in]
    return result


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
    keep = {"weight": torch.ones_like(raw_weight(m), dtype=torch.bool)}
    if raw_weight(m, "bias") is not None:
        keep["bias"] = torch.ones(layer.out_units, dtype=torch.bool, device=remove.device)
    _kill_units(keep, remove)
    _commit(layer, keep)


def _dead_units(graph: PruningGraph, stats: _Statistics, layer: LayerNode) -> torch.Tensor:
    """Units whose output is zero on the whole batch wherever they are read.

    Only units read by prunable layers, each input feature carrying that unit alone, qualify: a unit that
    reaches a merge (residual addition, ``cat`` of tokens, LayerNorm statistics), an ignored layer, the output,
    or a reader not scored in this forward is never declared dead (the paper's rule is for a unit's own output).
    """
    n = layer.out_units
    peak = torch.zeros(n, dtype=torch.float64)
    seen = torch.zeros(n, dtype=torch.bool)
    blocked = graph.escapes[layer.name].clone()
    for reader in graph.layers():
        idx = reader.input_map.get(layer.name)
        if idx is None:
            continue
        present = idx >= 0
        others = sum((i >= 0).int() for s, i in reader.input_map.items() if s != layer.name)
        alone = present & ~reader.input_merged & (torch.as_tensor(others) == 0)
        cmax = stats.channel_max.get(reader.name)
        if cmax is None:
            blocked[idx[present]] = True
            continue
        blocked[idx[present & ~alone]] = True
        cmax = cmax.detach().to('cpu', peak.dtype)
        peak.scatter_reduce_(0, idx[alone], cmax[alone], "amax")
        seen[idx[alone]] = True
    return seen & ~blocked & (peak == 0)


def _residual_rule(merge: Merge, stats: _Statistics, alpha: float) -> list[torch.Tensor]:
    """Per branch of ``merge``: the channels whose share of the merged signal is below ``1 - alpha``.

    The paper's rule for a residual block (``r / (r + s)`` and ``s / (r + s)`` with ``r``, ``s`` the L2 norms of
    the batch-mean ``|branch|`` maps), applied to each branch of any two-way addition (our extension)."""
    norms = [m.movedim(merge.axis - 1, 0).reshape(m.shape[merge.axis - 1], -1).norm(dim=1)
             for m in stats.branch_maps[merge.node]]
    total = sum(norms)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    valid = total > 0
    return [valid & (r / safe < 1 - alpha) for r in norms]


def _backward_sweep(graph: PruningGraph) -> None:
    """From the output to the input over the traced graph: a unit nothing downstream reads loses its incoming
    connections and bias; a gate channel nobody reads is closed (see :mod:`relief_nb.graph`)."""
    need: dict[str, torch.Tensor | None] = {}
    for node in reversed(list(graph.gm.graph.nodes)):
        back = graph.back.get(node.name)
        if back is None:
            continue
        axis = graph.out_axis.get(node.name, -1)
        if node.op == "output" or axis < 0:
            wanted = None
        else:
            wanted = need.get(node.name, False)
            n = graph.out_len[node.name]
            if wanted is None or wanted is True:
                wanted = torch.ones(n, dtype=torch.bool)
            elif wanted is False:
                wanted = torch.zeros(n, dtype=torch.bool)
        layer_name = graph.node_layer.get(node.name)
        if layer_name is not None:
            layer = graph.layer(layer_name)
            remove_units(layer, ~wanted.to(current_mask(layer.module).device))
        for src, t in back(wanted):
            if graph.out_axis.get(src.name, -1) < 0:
                continue
            old = need.get(src.name, False)
            if t is None or old is None:
                need[src.name] = None
            else:
                t = t.cpu().bool()
                need[src.name] = t if old is False else old | t


def _mask_removed_norms(graph: PruningGraph) -> None:
    """A channel of a BatchNorm / LayerNorm whose every unit is removed (no incoming weight, no bias) is masked."""
    if not graph.norms:
        return
    alive = {layer.name: alive_units(layer).cpu() for layer in graph.layers()}
    for norm in graph.norms:
        if not norm.input_map or getattr(norm.module, "weight", None) is None:
            continue
        present = torch.zeros(len(norm.fixed), dtype=torch.bool)
        kept = torch.zeros_like(present)
        for src, idx in norm.input_map.items():
            here = idx >= 0
            present |= here
            kept |= here & alive[src][idx.clamp(min=0)]
        removed = present & ~kept & ~norm.fixed
        if bool(removed.any()) or is_pruned(norm.module):
            for name in ("weight", "bias"):
                if getattr(norm.module, name, None) is not None:
                    shrink_mask(norm.module, name, ~removed)


def _check_inputs(model: nn.Module, batch: torch.Tensor, graph: PruningGraph) -> None:
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"the scoring batch must be a torch.Tensor, got {type(batch).__name__}")
    if batch.ndim == 0 or batch.shape[0] == 0:
        raise ValueError("the scoring batch is empty; pass N >= 1 training images (the paper uses N = 1000)")
    if tuple(batch.shape[1:]) != tuple(graph.input_shape):
        raise ValueError(f"the scoring batch has shape {tuple(batch.shape)} but the model expects "
                         f"(N, {', '.join(map(str, graph.input_shape))})")
    param = next(model.parameters(), None)
    if param is not None and batch.dtype != param.dtype:
        hint = " (uint8 pixels: relief_nb.data.prepare(x, dataset, device), or x.float() / 255)" \
            if batch.dtype == torch.uint8 else ""
        raise TypeError(f"the scoring batch is {batch.dtype} but the model's weights are {param.dtype}; pass "
                        f"inputs as the model takes them, e.g. batch.to({param.dtype}){hint}")
    if not all_finite(batch):
        raise ValueError("the scoring batch contains NaN or inf")
    constant = _constant_batch(batch)
    if constant:
        _warn(f"the scoring batch is {constant}: importance scores measured on it are meaningless (they reflect "
              "the weights, not the data); pass real training images (the paper uses N = 1000)")
    for layer in graph.layers():
        for name in ("weight", "bias"):
            p = effective(layer.module, name)
            if p is not None and not all_finite(p):
                raise FloatingPointError(f"{name} of layer {layer.name} contains NaN or inf; prune a trained, "
                                         "finite model")


def _constant_batch(batch: torch.Tensor) -> str | None:
    """How the batch is constant (all zeros, every sample identical, one constant sample), or None if it is not.
    Cheap: a batch of differing samples is told by comparing its first two."""
    n = batch.shape[0]
    if n > 1:
        if not torch.equal(batch[1], batch[0]) or not bool((batch == batch[:1]).all()):
            return None
    elif not bool((batch == batch[(0,) * batch.ndim]).all()):
        return None
    if not bool(batch[0].any()):
        return "all zeros"
    return f"constant (all {n} samples identical)" if n > 1 else "a single constant sample"


def _remaining_weights(graph: PruningGraph) -> int:
    """Weights the masks of the prunable layers keep (no tensor work for a layer never pruned)."""
    return sum(kept_count(layer.module)[1] for layer in graph.layers())


def _chunk_size(config: ReliefConfig, layers: list[LayerNode], batch: torch.Tensor) -> int:
    return config.chunk_size or (_CONV_CHUNK if any(x.kind == "conv" for x in layers) else batch.shape[0])


def trace_for_batch(model: nn.Module, batch: torch.Tensor, ignore: Iterable[str] = (),
                    cache: bool = True) -> PruningGraph:
    """Trace ``model`` with the per-example shape of ``batch``, turning a shape mismatch into a clear error
    (the model's last graph is reused while its structure is unchanged: :func:`relief_nb.graph.trace_graph`)."""
    if not isinstance(batch, torch.Tensor) or batch.ndim < 2 or batch.shape[0] == 0:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ValueError(f"the scoring batch must be a non-empty tensor (N, ...), got {shape}")
    try:
        return trace_model(model, tuple(batch.shape[1:]), ignore=ignore, cache=cache)
    except RuntimeError as err:
        raise ValueError(f"the scoring batch's example shape {tuple(batch.shape[1:])} does not fit the model: "
                         f"{err}") from err


def _prepare(model: nn.Module, batch: torch.Tensor, config: ReliefConfig | None, graph: PruningGraph | None,
             ignore: Iterable[str]) -> tuple[ReliefConfig, PruningGraph, torch.Tensor]:
    """What a pass and :func:`score_layers` start from: the config (default: the paper's), the graph (traced now
    unless given) and the batch on the model's device, every input checked."""
    graph = graph or trace_for_batch(model, batch, ignore)
    batch = batch.to(next(model.parameters()).device)
    _check_inputs(model, batch, graph)
    return config or ReliefConfig(), graph, batch


@torch.no_grad()
def relief_prune(
    model: nn.Module,
    batch: torch.Tensor,
    config: ReliefConfig | None = None,
    graph: PruningGraph | None = None,
    ignore: Iterable[str] = (),
) -> PruningGraph:
    """Run one NNrelief pruning pass on ``model`` in place, scoring on ``batch`` (N, ...).

    ``ignore`` names module paths to leave dense (not scored, not pruned, read whole; e.g. attention
    projections). Returns the model's :class:`PruningGraph` (traced now unless given), useful for metrics.
    The model is traced, and anything unsupported refused, before any mask changes; nothing is committed if
    any later step fails. Warns (:class:`ReliefWarning`) if the batch is constant, and if the pass removes more
    than 90 % of the weights that remained before it.
    """
    config, graph, batch = _prepare(model, batch, config, graph, ignore)
    snapshot = mask_snapshot(model)
    before = _remaining_weights(graph)
    with eval_mode(model):
        try:
            _prune(model, batch, config, graph)
        except BaseException:
            restore_masks(model, snapshot)
            raise
    removed = 1 - _remaining_weights(graph) / before if before else 0.0
    if removed > _LARGE_REMOVAL:
        _warn(f"this pass removed {removed:.1%} of the {before:,} weights that remained before it, which leaves "
              f"retraining little to work with: use a higher alpha (now alpha_conv={config.alpha_conv:g}, "
              f"alpha_fc={config.alpha_fc:g}; closer to 1 removes less per pass), and score a trained model on real "
              "training images")
    return graph


def _prune(model: nn.Module, batch: torch.Tensor, config: ReliefConfig, graph: PruningGraph) -> None:
    """Steps 1-5 of the module docstring on the model in eval mode; the caller restores the masks on failure."""
    layers = graph.layers()
    convs = [x for x in layers if x.kind == "conv"]
    linears = [x for x in layers if x.kind == "linear"]
    chunk = _chunk_size(config, layers, batch)
    merges = graph.merges if config.residual_rule else []
    conv_merges = [m for m in merges if m.ndim == 4] if convs else merges
    keeps: dict[str, dict[str, torch.Tensor]] = {}

    def select_layers(group: list[LayerNode], st: _Statistics, alpha: float) -> None:
        for layer in group:
            keep = _layer_keep(layer, _connection_scores(layer, st), alpha, config.selection)
            if config.dead_units:
                dead = _dead_units(graph, st, layer)
                if bool(dead.any()):
                    _kill_units(keep, dead.to(keep["weight"].device))
            keeps[layer.name] = keep

    def residual(group: list[Merge], st: _Statistics, alpha: float) -> None:
        for merge in group:
            for cut, target in zip(_residual_rule(merge, st, alpha), merge.cuts):
                if isinstance(target, Gate):
                    target.mask.mul_((~cut).to(target.mask.device, target.mask.dtype))
                elif target is not None and target in keeps:
                    _kill_units(keeps[target], cut.to(keeps[target]["weight"].device))
                elif target is not None:
                    remove_units(graph.layer(target), cut)

    stats = _Statistics(graph, layers, config, conv_merges)
    stats.run(model, batch, chunk)
    select_layers(convs, stats, config.alpha_conv)
    residual(conv_merges if convs else [], stats, config.alpha_conv)
    for layer in convs:
        _commit(layer, keeps[layer.name])
    # a filter removed above (dead-unit or residual rule) must be silent before the classifier is scored: its
    # BatchNorm would otherwise still emit relu(beta - gamma mu / sqrt(var + eps)) on the second forward
    _mask_removed_norms(graph)
    if linears:
        linear_merges = [m for m in merges if m.ndim != 4] if convs else merges
        if convs:  # the classifier is scored on features of the conv-pruned network
            stats = _Statistics(graph, linears, config, linear_merges)
            stats.run(model, batch, chunk)
        select_layers(linears, stats, config.alpha_fc)
        residual(linear_merges, stats, config.alpha_fc)
        for layer in linears:
            _commit(layer, keeps[layer.name])
    if config.backward_pruning:
        _backward_sweep(graph)
    _mask_removed_norms(graph)


@torch.no_grad()
def score_layers(
    model: nn.Module,
    batch: torch.Tensor,
    config: ReliefConfig | None = None,
    graph: PruningGraph | None = None,
    ignore: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """The NNrelief scores of every prunable layer on ``batch`` (N, ...), without pruning anything.

    One tensor per layer name, one row per unit: the scores of its incoming connections (a Linear layer's
    inputs; a conv filter's kernels on the input channels of its group, one kernel for a depthwise conv), then of
    its bias if it has one; formulas in :mod:`relief_nb.scores`. They come from the collector the pass uses, in
    one forward over the model as it is now, so they are the scores a pass would select from with the alpha rule
    (:func:`relief_nb.selection.select`). For the Linear layers of a network with conv layers, the pass scores
    after pruning the convs; these are the scores before.
    """
    config, graph, batch = _prepare(model, batch, config, graph, ignore)
    layers = graph.layers()
    with eval_mode(model):
        stats = _Statistics(graph, layers, config)
        stats.run(model, batch, _chunk_size(config, layers, batch))
        return {layer.name: _connection_scores(layer, stats) for layer in layers}
