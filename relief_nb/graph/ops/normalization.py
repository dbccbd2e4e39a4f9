"""Normalizations and other per-channel layers: BatchNorm (any dimension) follows its channels and is folded into the
layer it reads directly; InstanceNorm (statistics per sample and channel) and PReLU (a slope per channel, f(0) = 0)
follow their channels and are sliced, never folded; LayerNorm over the unit axis passes units through but mixes the
statistics of all of them, so its output channels count as merged (the dead-unit rule does not apply to them);
GroupNorm mixes the statistics of the channels of a group, so its channels count as merged and the export removes
a group only when all its channels are removed (a removed channel of a kept group stays, masked to zero)."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from ..nodes import Norm, UnitMap
from .base import WalkerBase

__all__ = ["NormOps", "channels_of"]


def channels_of(m: nn.Module) -> int:
    """The number of channels a per-channel layer (a norm, PReLU) holds parameters or statistics for."""
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[0]
    if isinstance(m, nn.GroupNorm):
        return m.num_channels
    if isinstance(m, nn.PReLU):
        return m.num_parameters
    return m.num_features if hasattr(m, "num_features") else m.weight.numel()  # a declared norm of one's own


class NormOps(WalkerBase):
    def batch_norm(self, node: fx.Node, path: str, m: _BatchNorm, src: fx.Node, val: UnitMap,
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
            merged = UnitMap(val.axis, val.cmap, torch.ones_like(val.merged), val.fixed, val.offset)
            self.vals[node.name] = merged
            self.back[node.name] = lambda need, src=src: [(src, need)]
            self.links[node.name] = ("ln", src)
            self.chain = False

    def channelwise(self, node: fx.Node, path: str, m: nn.Module, src: fx.Node, val: UnitMap,
                    in_shape: tuple[int, ...]) -> None:
        """InstanceNorm or PReLU: channels pass through; per-channel parameters are sliced with them."""
        per_channel = channels_of(m) > 1 if isinstance(m, nn.PReLU) else True  # InstanceNorm: num_features too
        if per_channel:
            self.need_axis(node, val, 1, len(in_shape))
        if isinstance(m, _InstanceNorm):
            self.norm(node, path, m, src, val)  # an affine channel whose unit is removed emits its beta: masked
        self.passthrough(node, src)
        if per_channel:
            self.links[node.name] = ("channelwise", src)

    def declared(self, node: fx.Node, path: str, m: nn.Module, src: fx.Node, val: UnitMap, in_shape: tuple[int, ...],
                 role: str) -> None:
        """A module declared with :func:`relief_nb.graph.taxonomy.declare_layer`: the identity, a BatchNorm (+ an
        activation with f(0) = 0: sliced, never folded, since the activation would be lost), or a LayerNorm over the
        unit axis (channels merged, kept whole at export)."""
        if role == "identity":
            self.passthrough(node, src)
            return
        self.norm(node, path, m, src, val, foldable=False)  # a removed unit's channel is masked
        if role == "batchnorm":
            self.need_axis(node, val, 1, len(in_shape))
            self.passthrough(node, src)
            self.links[node.name] = ("channelwise", src)
            return
        self.vals[node.name] = UnitMap(val.axis, val.cmap, torch.ones_like(val.merged), val.fixed, val.offset)
        self.back[node.name] = lambda need, src=src: [(src, need)]
        self.links[node.name] = ("ln", src)
        self.chain = False

    def group_norm(self, node: fx.Node, path: str, m: nn.GroupNorm, src: fx.Node, val: UnitMap,
                   in_shape: tuple[int, ...]) -> None:
        self.need_axis(node, val, 1, len(in_shape))
        self.norm(node, path, m, src, val)
        self.vals[node.name] = UnitMap(val.axis, val.cmap, torch.ones_like(val.merged), val.fixed, val.offset)
        self.back[node.name] = lambda need, src=src: [(src, need)]
        self.links[node.name] = ("gn", src, m.num_groups)
        self.chain = False

    def norm(self, node: fx.Node, path: str, m: nn.Module, src: fx.Node, val: UnitMap, foldable: bool = True) -> None:
        direct = self.node_layer.get(src.name) if foldable else None
        n = channels_of(m)
        fixed = val.fixed if not val.is_fixed else torch.ones(n, dtype=torch.bool)
        self.norms.append(Norm(path, m, val.cmap, fixed, direct))
        if direct is not None and isinstance(m, _BatchNorm) and self.layers[direct].bn is None:
            self.layers[direct].bn, self.layers[direct].bn_name = m, path
        elif not val.is_fixed:
            self.chain = False  # a norm that is not right after a layer (after an activation, a merge)
