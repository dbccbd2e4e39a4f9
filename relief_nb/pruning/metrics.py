"""Sparsity metrics: remaining parameters (two conventions), compression, alive units, FLOPs.

Conventions:

* ``paper``: weights and biases of Conv2d and Linear layers (the paper's count, BatchNorm excluded; layers left
  dense with ``ignore=`` count whole);
* ``all``: every ``nn.Module`` parameter (BatchNorm affine parameters included), masks applied.

FLOPs count 2 per multiply-accumulate of the prunable Conv2d and Linear layers (grouped and depthwise convs by
their in-group kernels, a Linear on sequences once per position), as ``torch.utils.flop_counter`` does (dense
totals agree with it exactly for models without ignored layers or other matmuls); the sparse count keeps only
surviving kernels and connections.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.masks import current_mask, kept_count
from ..core.modes import eval_mode
from ..core.units import UNIT_LAYERS, is_conv, is_transposed
from ..graph.structure import LayerNode, PruningGraph
from ..graph.trace import alive_units

__all__ = ["count_parameters", "dense_flops_torch", "layer_table", "summary"]


def count_parameters(model: nn.Module, graph: PruningGraph, convention: str = "paper") -> tuple[int, int]:
    """``(total, remaining)`` parameters under ``convention`` ("paper" or "all")."""
    if convention == "paper":
        total = remaining = 0
        modules = [layer.module for layer in graph.layers()] + _ignored_layers(model, graph)
        for module in modules:
            for name in ("weight", "bias"):
                t, r = kept_count(module, name)
                total, remaining = total + t, remaining + r
        return total, remaining
    if convention == "all":
        total = remaining = 0
        for module in model.modules():
            for pname, _ in module.named_parameters(recurse=False):
                t, r = kept_count(module, pname[: -len("_orig")] if pname.endswith("_orig") else pname)
                total, remaining = total + t, remaining + r
        return total, remaining
    raise ValueError(f"unknown convention {convention!r}; use 'paper' or 'all'")


def _ignored_layers(model: nn.Module, graph: PruningGraph) -> list[nn.Module]:
    """Prunable layers left dense with ``ignore=``: counted (dense) in the paper convention."""
    ignored = getattr(graph, "ignored", ())
    return [m for path, m in model.named_modules() if isinstance(m, UNIT_LAYERS)
            and any(path == p or path.startswith(p + ".") for p in ignored)]


def _layer_flops(layer: LayerNode) -> tuple[int, int]:
    """(dense, sparse) FLOPs of one layer for one example."""
    m = layer.module
    mask = current_mask(m, "weight") != 0
    # each weight is applied at every output position of a conv (a grouped conv's weight holds only its in-group
    # kernels), at every input position of a transposed conv, and at each of the T positions of a Linear on
    # sequences (N, T, F); an embedding table is a lookup (no multiply-adds)
    if isinstance(m, nn.Embedding):
        return 0, 0
    if is_conv(m):
        positions = layer.in_shape[1:] if is_transposed(m) else layer.out_shape[1:]
    else:
        positions = layer.out_shape[:-1]
    per_weight = 2 * math.prod(positions)
    return per_weight * mask.numel(), per_weight * int(mask.sum())


def dense_flops_torch(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Dense FLOPs of one example as ``torch.utils.flop_counter`` counts them."""
    param = next(model.parameters())
    x = torch.zeros(1, *input_shape, dtype=param.dtype, device=param.device)
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def layer_table(model: nn.Module, graph: PruningGraph) -> pd.DataFrame:
    """One row per prunable layer: weights, remaining fraction, alive units, FLOPs; then one row per module the pass
    kept whole (``ignore=``, recurrent layers), its kind saying why."""
    rows = []
    for layer in graph.layers():
        w_total, w_left = kept_count(layer.module, "weight")
        b_total, b_left = kept_count(layer.module, "bias")
        dense, sparse = _layer_flops(layer)
        rows.append({
            "layer": layer.name,
            "kind": layer.kind,
            "weights": w_total,
            "weights_remaining": w_left,
            "biases": b_total,
            "biases_remaining": b_left,
            "remaining_fraction": (w_left + b_left) / max(w_total + b_total, 1),
            "units": layer.out_units,
            "alive_units": int(alive_units(layer).sum()),
            "flops_dense": dense,
            "flops_sparse": sparse,
        })
    modules = dict(model.named_modules())
    for path, why in getattr(graph, "kept_whole", {}).items():  # what the pass left dense, so the user sees it
        weights = sum(p.numel() for p in modules[path].parameters()) if path in modules else 0
        rows.append({"layer": path, "kind": f"kept whole ({why})", "weights": weights, "weights_remaining": weights,
                     "biases": 0, "biases_remaining": 0, "remaining_fraction": 1.0, "units": 0, "alive_units": 0,
                     "flops_dense": 0, "flops_sparse": 0})
    return pd.DataFrame(rows)


def summary(model: nn.Module, graph: PruningGraph) -> dict[str, float]:
    """Whole-model numbers: remaining parameters (both conventions), compression, FLOPs."""
    total, left = count_parameters(model, graph, "paper")
    total_all, left_all = count_parameters(model, graph, "all")
    table = layer_table(model, graph)
    flops_dense, flops_sparse = int(table.flops_dense.sum()), int(table.flops_sparse.sum())
    return {
        "params_total": total,
        "params_remaining": left,
        "compression": total / max(left, 1),
        "params_all_total": total_all,
        "params_all_remaining": left_all,
        "compression_all": total_all / max(left_all, 1),
        "flops_dense": flops_dense,
        "flops_sparse": flops_sparse,
        "flops_reduction": flops_dense / max(flops_sparse, 1),
    }
