"""Normalizations: BatchNorm follows its channels (and is folded into the layer it reads directly); LayerNorm over
the unit axis passes units through but mixes the statistics of all of them, so its output channels count as
merged (the dead-unit rule does not apply to them)."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ..nodes import Norm, UnitMap
from .base import WalkerBase

__all__ = ["NormOps"]


class NormOps(WalkerBase):
    def batch_norm(self, node: fx.Node, path: str, m: nn.BatchNorm1d | nn.BatchNorm2d, src: fx.Node, val: UnitMap,
                   in_shape: tuple[int, ...]) -> None:
        if not val.is_fixed:
            self.need_axis(node, val, 1, len(in_shape))
        self.norm(node, path, m, src, val)
        self.passthrough(node, src)
        self.links[node.name] = ("bn", src)

    def layer_norm(self, node: fx.Node, path: str, m: nn.LayerNorm, src: fx.Node, val: UnitMap,
                   in_shape: tuple[int, ...]) -> None:
        if len(m.normalized_shape) != 1 or (not val.is_fixed and val.axis != len(in_shape) - 1):
            self.refuse(node, "only a LayerNorm over the unit axis (the last dim) is supported")
        self.norm(node, path, m, src, val)
        if val.is_fixed:
            self.vals[node.name] = val
            self.back[node.name] = lambda need, src=src: [(src, None)]
        else:
            merged = UnitMap(val.axis, val.cmap, torch.ones_like(val.merged), val.fixed)
            self.vals[node.name] = merged
            self.back[node.name] = lambda need, src=src: [(src, need)]
            self.links[node.name] = ("ln", src)
            self.chain = False

    def norm(self, node: fx.Node, path: str, m: nn.Module, src: fx.Node, val: UnitMap) -> None:
        direct = self.node_layer.get(src.name)
        n = m.num_features if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) else m.normalized_shape[0]
        fixed = val.fixed if not val.is_fixed else torch.ones(n, dtype=torch.bool)
        self.norms.append(Norm(path, m, val.cmap, fixed, direct))
        if direct is not None and isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and self.layers[direct].bn is None:
            self.layers[direct].bn, self.layers[direct].bn_name = m, path
        elif not val.is_fixed:
            self.chain = False  # a norm that is not right after a layer (after an activation, a merge)
