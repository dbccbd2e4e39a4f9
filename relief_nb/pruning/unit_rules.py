"""The pass's structural rules, applied to the scores: selection into keep-masks, the dead-unit rule, the residual
rule, the backward sweep from the output to the input, and masking the norms of removed units (see the steps in
:mod:`relief_nb.pruning.relief`)."""

from __future__ import annotations

import torch

from ..core.masks import current_mask, is_pruned, raw_weight, shrink_mask
from ..core.selection import SelectionRule, select
from ..core.units import from_unit_major, unit_major
from ..graph.nodes import to_host, to_model
from ..graph.structure import LayerNode, PruningGraph
from ..graph.trace import Merge, alive_units
from .statistics import _Statistics

__all__ = ["remove_units"]


def _layer_keep(layer: LayerNode, scores: torch.Tensor, alpha: float, rule: SelectionRule) -> dict[str, torch.Tensor]:
    """Keep-masks for the layer's weight (unit-major: :mod:`relief_nb.core.units`) and bias from its connection
    scores (:func:`_connection_scores`)."""
    keep = select(scores, alpha, rule)
    shape = unit_major(layer.module, raw_weight(layer.module)).shape
    n_in = shape[1]
    w_keep = keep[:, :n_in]
    if len(shape) > 2:  # a kernel's entries share its connection's fate
        w_keep = w_keep.view(*w_keep.shape, *[1] * (len(shape) - 2)).expand(shape)
    result = {"weight": w_keep}
    if scores.shape[1] > n_in:
        result["bias"] = keep[:, n_in]
    return result


def _kill_units(keep: dict[str, torch.Tensor], dead: torch.Tensor) -> None:
    keep["weight"] = keep["weight"] & ~dead.view(-1, *([1] * (keep["weight"].ndim - 1)))
    if "bias" in keep:
        keep["bias"] = keep["bias"] & ~dead


def _commit(layer: LayerNode, keep: dict[str, torch.Tensor]) -> None:
    """Install the unit-major keep-masks in the layer's own weight layout."""
    for name, k in keep.items():
        shrink_mask(layer.module, name, from_unit_major(layer.module, k) if name == "weight" else k)


def remove_units(layer: LayerNode, remove: torch.Tensor) -> None:
    """Remove the layer's units flagged in ``remove``: incoming weights and bias (BatchNorm follows later)."""
    if not bool(remove.any()):
        return
    m = layer.module
    keep = {"weight": torch.ones_like(unit_major(m, raw_weight(m)), dtype=torch.bool)}
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
        cmax = to_host(cmax).to(peak.dtype)
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
            remove_units(layer, to_model(~wanted, current_mask(layer.module)))
        for src, t in back(wanted):
            if graph.out_axis.get(src.name, -1) < 0:
                continue
            old = need.get(src.name, False)
            if t is None or old is None:
                need[src.name] = None
            else:
                t = to_host(t).bool()
                need[src.name] = t if old is False else old | t


def _mask_removed_norms(graph: PruningGraph) -> None:
    """A channel of a BatchNorm / LayerNorm whose every unit is removed (no incoming weight, no bias) is masked."""
    if not graph.norms:
        return
    alive = {layer.name: to_host(alive_units(layer)) for layer in graph.layers()}
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
