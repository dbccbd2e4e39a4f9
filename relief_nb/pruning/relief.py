"""One NNrelief pruning pass: score -> select -> dead units -> residual rule -> backward pruning.

The pass follows the model's traced dependency graph (:mod:`relief_nb.graph`, ``torch.fx``), so one
implementation serves every architecture it can trace: chains, residual additions, concatenations, depthwise
convs, sequences.

1. Conv layers are scored on the activations of the network as it was before this pass (one forward over the
   scoring batch; hooks accumulate what :mod:`relief_nb.core.scores` needs). A grouped / depthwise conv's filter has
   the input channels of its group as connections (scored as the equivalent dense conv, whose other kernels
   are zero and never kept).
2. Selection (:mod:`relief_nb.core.selection`) keeps, per filter, the kernels (and bias) carrying a fraction
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

The measurements are :mod:`.statistics`, the structural rules :mod:`.unit_rules`; this module is the pass.

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
from torch import nn

from ..core.batches import Batch, as_spec, batch_size, batch_tensors, describe, input_shape_of, spec_of, to_device
from ..core.masks import (
    effective,
    kept_count,
    mask_snapshot,
    restore_masks,
)
from ..core.modes import eval_mode
from ..core.precision import strict_fp32
from ..core.scores import (
    CONV_AGGREGATIONS,
    ConvAggregation,
)
from ..core.selection import SELECTION_RULES, SelectionRule, check_alpha
from ..graph.nodes import to_model
from ..graph.structure import LayerNode, PruningGraph, trace_model
from ..graph.trace import Gate, Merge, alive_units
from .statistics import _connection_scores, _Statistics, all_finite
from .unit_rules import (
    _backward_sweep,
    _commit,
    _dead_units,
    _kill_units,
    _layer_keep,
    _mask_removed_norms,
    _residual_rule,
    remove_units,
)

__all__ = ["ReliefConfig", "ReliefWarning", "alive_units", "all_finite", "effective", "relief_prune", "score_layers"]

_CONV_CHUNK = 250  # default scoring images per forward for models with conv layers (see ReliefConfig.chunk_size)
_LARGE_REMOVAL = 0.9  # a pass that removes more than this fraction of the remaining weights warns


class ReliefWarning(UserWarning):
    """A pruning pass did something a user would probably not expect (a constant scoring batch, a pass that
    removes almost every remaining weight)."""


def _warn(message: str) -> None:
    """Emit a :class:`ReliefWarning` attributed to the first caller outside relief_nb (and the decorators of torch
    and contextlib)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in ("relief_nb", "torch",
                                                                                          "contextlib"):
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


def _check_dtypes(model: nn.Module, batch: Batch) -> None:
    """Float inputs in the model's dtype; uint8 pixels refused with the fix (integer token ids pass)."""
    param = next(model.parameters(), None)
    if param is None:
        return
    ids = isinstance(batch, torch.Tensor) and not any(isinstance(m, nn.Embedding) for m in model.modules())
    for t in batch_tensors(batch):
        pixels = t.dtype == torch.uint8 and ids
        # integers are token ids for an embedding table; a single integer batch for a model with none is a mistake
        if pixels or (ids and not t.is_floating_point()) or (t.is_floating_point() and t.dtype != param.dtype):
            hint = " (uint8 pixels: relief_nb.data.prepare(x, dataset, device), or x.float() / 255)" if pixels else ""
            raise TypeError(f"the scoring batch is {t.dtype} but the model's weights are {param.dtype}; pass "
                            f"inputs as the model takes them, e.g. batch.to({param.dtype}){hint}")


def _check_inputs(model: nn.Module, batch: Batch, graph: PruningGraph) -> None:
    if isinstance(batch, torch.Tensor) and (batch.ndim == 0 or batch.shape[0] == 0):
        raise ValueError("the scoring batch is empty; pass N >= 1 training images (the paper uses N = 1000)")
    spec, expected = spec_of(batch), as_spec(graph.input_shape)
    if spec != expected:
        raise ValueError(f"the scoring batch is {spec} but the model expects {expected}")
    _check_dtypes(model, batch)
    if not all(all_finite(t) for t in batch_tensors(batch) if t.is_floating_point()):
        raise ValueError("the scoring batch contains NaN or inf")
    float_images = isinstance(batch, torch.Tensor) and batch.is_floating_point()
    constant = _constant_batch(batch) if float_images else None  # token ids, several inputs: nothing to say
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


def _chunk_size(config: ReliefConfig, layers: list[LayerNode], batch: Batch) -> int:
    return config.chunk_size or (_CONV_CHUNK if any(x.kind == "conv" for x in layers) else batch_size(batch))


def trace_for_batch(model: nn.Module, batch: Batch, ignore: Iterable[str] = (),
                    cache: bool = True) -> PruningGraph:
    """Trace ``model`` for examples like ``batch`` (a tensor, or a tuple / dict of tensors: see
    :mod:`relief_nb.core.batches`), turning a mismatch into a clear error (the model's last graph is reused while
    its structure is unchanged: :func:`relief_nb.graph.trace_graph`)."""
    if isinstance(batch, torch.Tensor) and (batch.ndim < 2 or batch.shape[0] == 0):
        raise ValueError(f"the scoring batch must be a non-empty tensor (N, ...), got {tuple(batch.shape)}")
    shape = input_shape_of(batch)
    try:
        return trace_model(model, shape, ignore=ignore, cache=cache)
    except (RuntimeError, IndexError) as err:
        raise ValueError(f"the scoring batch (examples {describe(batch)}) does not fit the model: {err}") from err


def _prepare(model: nn.Module, batch: Batch, config: ReliefConfig | None, graph: PruningGraph | None,
             ignore: Iterable[str]) -> tuple[ReliefConfig, PruningGraph, Batch]:
    """What a pass and :func:`score_layers` start from: the config (default: the paper's), the graph (traced now
    unless given) and the batch on the model's device, every input checked."""
    if isinstance(batch, torch.Tensor) and batch.ndim >= 1 and batch.shape[0] > 0:
        _check_dtypes(model, batch)  # before tracing: integer pixels get their fix, not a layer's dtype error
    graph = graph or trace_for_batch(model, batch, ignore)
    batch = to_device(batch, next(model.parameters()).device)
    _check_inputs(model, batch, graph)
    return config or ReliefConfig(), graph, batch


@torch.no_grad()
@strict_fp32()  # scores in full float32 whatever the GPU's TF32 settings (relief_nb.core.precision)
def relief_prune(
    model: nn.Module,
    batch: Batch,
    config: ReliefConfig | None = None,
    graph: PruningGraph | None = None,
    ignore: Iterable[str] = (),
) -> PruningGraph:
    """Run one NNrelief pruning pass on ``model`` in place, scoring on ``batch`` (N, ...): images, sequences,
    volumes, token ids, or a tuple / dict of tensors for a forward with several inputs
    (:mod:`relief_nb.core.batches`).

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


def _prune(model: nn.Module, batch: Batch, config: ReliefConfig, graph: PruningGraph) -> None:
    """Steps 1-5 of the module docstring on the model in eval mode; the caller restores the masks on failure."""
    layers = graph.layers()
    convs = [x for x in layers if x.kind == "conv"]
    linears = [x for x in layers if x.kind != "conv"]  # Linear layers and embedding tables: alpha_fc
    chunk = _chunk_size(config, layers, batch)
    merges = graph.merges if config.residual_rule else []
    conv_merges = [m for m in merges if m.conv] if convs else merges
    keeps: dict[str, dict[str, torch.Tensor]] = {}

    def select_layers(group: list[LayerNode], st: _Statistics, alpha: float) -> None:
        for layer in group:
            keep = _layer_keep(layer, _connection_scores(layer, st), alpha, config.selection)
            if config.dead_units:
                dead = _dead_units(graph, st, layer)
                if bool(dead.any()):
                    _kill_units(keep, to_model(dead, keep["weight"]))
            keeps[layer.name] = keep

    def residual(group: list[Merge], st: _Statistics, alpha: float) -> None:
        for merge in group:
            for cut, target in zip(_residual_rule(merge, st, alpha), merge.cuts):
                if isinstance(target, Gate):
                    target.close(~cut)
                elif target is not None and target in keeps:
                    _kill_units(keeps[target], to_model(cut, keeps[target]["weight"]))
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
        linear_merges = [m for m in merges if not m.conv] if convs else merges
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
@strict_fp32()
def score_layers(
    model: nn.Module,
    batch: Batch,
    config: ReliefConfig | None = None,
    graph: PruningGraph | None = None,
    ignore: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """The NNrelief scores of every prunable layer on ``batch`` (N, ...), without pruning anything.

    One tensor per layer name, one row per unit: the scores of its incoming connections (a Linear layer's
    inputs; a conv filter's kernels on the input channels of its group, one kernel for a depthwise conv), then of
    its bias if it has one; formulas in :mod:`relief_nb.core.scores`. They come from the collector the pass uses, in
    one forward over the model as it is now, so they are the scores a pass would select from with the alpha rule
    (:func:`relief_nb.core.selection.select`). For the Linear layers of a network with conv layers, the pass scores
    after pruning the convs; these are the scores before.
    """
    config, graph, batch = _prepare(model, batch, config, graph, ignore)
    layers = graph.layers()
    with eval_mode(model):
        stats = _Statistics(graph, layers, config)
        stats.run(model, batch, _chunk_size(config, layers, batch))
        return {layer.name: _connection_scores(layer, stats) for layer in layers}
