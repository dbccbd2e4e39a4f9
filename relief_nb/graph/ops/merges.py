"""Merges and products: ``torch.cat`` along the unit axis concatenates the maps; a residual addition (identity,
option-A or projection shortcut), ``cat`` along another axis, or adding a constant makes each channel carry the
units of every branch, *merged*: the dead-unit rule does not apply to it, and a two-branch addition is a residual
group (:class:`~relief_nb.graph.nodes.Merge`) whose branches the residual rule may cut. A multiplication by a
per-channel buffer named ``*mask`` is a *gate* the residual rule may close; by a constant or parameter, a scale
that units pass through."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..nodes import Gate, Merge, UnitMap, shape_of
from ..taxonomy import ADD, MUL
from .base import WalkerBase

__all__ = ["MergeOps"]


def _has_scalar(node: fx.Node) -> bool:
    return any(isinstance(a, (int, float)) and a != 0 for a in node.args)


class MergeOps(WalkerBase):
    def mul(self, node: fx.Node, ins: list[fx.Node], moving: list[fx.Node], src: fx.Node, val: UnitMap,
            out_shape: tuple[int, ...]) -> None:
        operands = [a for a in node.args if isinstance(a, fx.Node) and a in moving]
        if len(operands) > 1:  # a gate (squeeze-and-excitation: x * sigmoid(fc(pool(x)))): channels joined
            self.merge(node, ins, moving, out_shape)
            return
        other = next((a for a in node.args if isinstance(a, fx.Node) and a is not src), None)
        gate = self.find_gate(other) if other is not None else None
        if gate is not None:
            self.gates[node.name] = gate
            self.vals[node.name] = val

            self.back[node.name] = lambda need, gate=gate: [(src, gate.close(need))]  # nobody reads it: closed
            self.links[node.name] = ("gate", src, gate)
            return
        # a scale by a constant or parameter: units pass through (a removed unit still emits zero)
        self.vals[node.name] = val
        self.back[node.name] = lambda need: [(src, need)] + [(a, None) for a in ins if a is not src]
        per_channel = self.channel_parameter(other, val.axis, len(out_shape), len(val.merged))
        if per_channel is not None:  # layer scale (ConvNeXt, CaiT): sliced with the channels at export
            self.links[node.name] = ("channel_scale", src, per_channel)
        else:
            self.links[node.name] = ("scale", src, other)

    def channel_parameter(self, node: fx.Node | None, axis: int, ndim: int, n: int) -> str | None:
        """The path of a parameter that holds one value per channel of the unit axis along its own dim 0 (shape
        ``(C,)`` on channels-last units, ``(C, 1, 1)`` on NCHW ones) and is used nowhere else; else None."""
        if node is None or node.op != "get_attr" or len(node.users) != 1:
            return None
        try:
            p = self.model.get_parameter(str(node.target))
        except AttributeError:
            return None
        shape = tuple(p.shape)
        if len(shape) != ndim - axis % ndim or shape[0] != n or any(d != 1 for d in shape[1:]):
            return None
        return str(node.target)

    def find_gate(self, node: fx.Node) -> Gate | None:
        while node.op == "call_method" and node.target in ("view", "reshape", "to"):
            node = node.args[0]
        if node.op != "get_attr" or not str(node.target).endswith("mask"):
            return None
        path, _, name = str(node.target).rpartition(".")
        owner = self.modules.get(path)
        if owner is None or name not in dict(owner.named_buffers(recurse=False)):
            return None
        return Gate(owner, name)

    def merge(self, node: fx.Node, ins: list[fx.Node], moving: list[fx.Node], out_shape: tuple[int, ...]) -> None:
        if node.target is torch.cat:
            tensors = node.args[0]
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            ref = self.vals[moving[0].name]
            dim %= len(out_shape)
            if dim == ref.axis:
                self.concat(node, list(tensors), dim)
                return
        vals = [self.vals[a.name] for a in moving]
        axis, n = vals[0].axis, out_shape[vals[0].axis]
        cmap: dict[str, torch.Tensor] = {}
        for v in vals:
            if v.axis != axis or len(v.merged) != n:
                self.refuse(node, "its operands carry units on different axes or with different sizes")
            for s, idx in v.cmap.items():
                if s in cmap:
                    clash = (cmap[s] >= 0) & (idx >= 0) & (cmap[s] != idx)
                    if bool(clash.any()):
                        self.refuse(node, f"it adds units of layer {s} to other units of the same layer")
                    cmap[s] = torch.maximum(cmap[s], idx)
                else:
                    cmap[s] = idx.clone()
        fixed = torch.stack([v.fixed for v in vals]).any(0) | (len(ins) > len(moving)) | _has_scalar(node)
        merged = torch.ones(n, dtype=torch.bool)
        # a product is zero where one factor is; a sum, only where every term is
        offset = all(v.offset for v in vals) if node.target in MUL else any(v.offset for v in vals)
        self.vals[node.name] = UnitMap(axis, cmap, merged, fixed, offset)
        self.chain = False
        for v in vals:
            self.escape(v)
        self.back[node.name] = lambda need, ins=ins, moving=moving: (
            [(a, need) for a in moving] + [(a, None) for a in ins if a not in moving])
        self.links[node.name] = ("merge", moving)
        if node.target in ADD and len(moving) == 2:
            self.merges.append(Merge(node.name, axis, len(out_shape), [self.cut_of(a) for a in moving]))

    def concat(self, node: fx.Node, tensors: list[fx.Node], dim: int) -> None:
        parts, lengths = [], []
        for t in tensors:
            v = self.vals.get(t.name)
            n = shape_of(t)[dim]
            lengths.append(n)
            if v is None or v.is_fixed:
                v = UnitMap(dim, {}, torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool))
            elif v.axis != dim:
                self.refuse(node, "concatenated tensors carry units on different axes")
            parts.append(v)
        sources = {s for v in parts for s in v.cmap}
        cmap = {s: torch.cat([v.cmap.get(s, torch.full((n,), -1)) for v, n in zip(parts, lengths)]) for s in sources}
        self.vals[node.name] = UnitMap(dim, cmap, torch.cat([v.merged for v in parts]),
                                       torch.cat([v.fixed for v in parts]), any(v.offset for v in parts))
        self.chain = False
        bounds = torch.tensor([0, *lengths]).cumsum(0).tolist()

        def back(need: torch.Tensor) -> list:
            return [(t, need[bounds[i]:bounds[i + 1]]) for i, t in enumerate(tensors)]
        self.back[node.name] = back
        self.links[node.name] = ("cat", list(tensors), bounds)

    def cut_of(self, node: fx.Node) -> str | Gate | None:
        """What the residual rule removes to cut this branch of a merge, per channel."""
        while True:
            if node.name in self.gates:
                return self.gates[node.name]
            if node.name in self.node_layer:
                return self.node_layer[node.name]
            if node.op == "call_module" and isinstance(self.modules[node.target], (_BatchNorm, nn.Identity,
                                                                                  nn.Dropout)):
                node = node.args[0]
                continue
            return None
