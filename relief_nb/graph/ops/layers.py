"""Prunable layers: a weighted sum (Linear, a convolution of any dimension, transposed or not, an embedding table)
is a new source of units, ``arange(units)``, that reads its input axis through its kernels (a grouped / depthwise
conv's filter reads the input channels of its group only; an embedding table reads token ids, a fixed input)."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ...core.units import in_units, is_conv, is_transposed
from ..nodes import GraphLayer, UnitMap, layer_reads
from .base import WalkerBase

__all__ = ["LayerOps"]


class LayerOps(WalkerBase):
    def mix_positions(self, node: fx.Node, path: str, m: nn.Module, val: UnitMap) -> None:
        """A Linear over a dim that is not the unit axis (MLP-Mixer's token mixing): a weighted sum of positions, per
        channel, so units pass through like a pooling with weights. It is kept whole (its inputs are positions, not
        units) and reported; with a bias, a removed unit's channel emits the bias: offset."""
        src = node.all_input_nodes[0]
        self.kept_whole[path] = f"{type(m).__name__}, over positions (token mixing): its inputs are not units"
        self.vals[node.name] = UnitMap(val.axis, val.cmap, torch.ones_like(val.merged), val.fixed,
                                       val.offset or m.bias is not None)
        self.back[node.name] = lambda need, src=src: [(src, need)]
        self.links[node.name] = ("pass", src)
        self.chain = False

    def layer(self, node: fx.Node, path: str, m: nn.Module, val: UnitMap,
              in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        if path in self.layers:
            self.refuse(node, "a layer called twice in forward (shared weights) cannot be pruned per call")
        conv = is_conv(m)
        if conv and is_transposed(m) and m.groups > 1:
            self.refuse(node, "a grouped transposed convolution is not supported (groups=1 only)")
        embedding = isinstance(m, nn.Embedding)
        if embedding and not val.is_fixed:
            self.refuse(node, "an embedding table reads token ids, not a tensor carrying prunable units")
        axis = 1 if conv else len(in_shape) - 1
        if not conv and not embedding and not val.is_fixed and val.axis % len(in_shape) != axis:
            self.mix_positions(node, path, m, val)
            return
        if not embedding:
            self.need_axis(node, val, axis, len(in_shape))
        n_in = in_units(m) if embedding else in_shape[axis]
        cmap = val.cmap if not val.is_fixed else {}
        merged = val.merged if not val.is_fixed else torch.ones(n_in, dtype=torch.bool)
        fixed = val.fixed if not val.is_fixed else torch.ones(n_in, dtype=torch.bool)
        fpc = 1
        if len(cmap) == 1:
            (idx,) = cmap.values()
            units = self.layers[next(iter(cmap))].out_units
            if n_in % units == 0 and torch.equal(idx, torch.arange(units).repeat_interleave(n_in // units)):
                fpc = n_in // units
        prev = list(self.layers.values())[-1].name if self.layers else None
        if (set(cmap) != ({prev} if prev else set())) or bool(merged.any()) and prev is not None:
            self.chain = False
        layer = GraphLayer(path, m, out_shape=tuple(out_shape[1:]), in_shape=tuple(in_shape[1:]),
                           features_per_channel=fpc, input_map=cmap, input_merged=merged, input_fixed=fixed)
        self.layers[path] = layer
        self.node_layer[node.name] = path
        n_out = layer.out_units
        self.escapes[path] = torch.zeros(n_out, dtype=torch.bool)
        out_axis = 1 if conv else len(out_shape) - 1
        self.vals[node.name] = UnitMap(out_axis, {path: torch.arange(n_out)}, torch.zeros(n_out, dtype=torch.bool),
                                       torch.zeros(n_out, dtype=torch.bool))
        src = node.all_input_nodes[0]
        self.back[node.name] = lambda need, src=src, layer=layer: [(src, layer_reads(layer))]
        # reading offset units (after a sigmoid, say), the export keeps every channel the layer reads
        self.links[node.name] = ("layer", src, val.offset)
