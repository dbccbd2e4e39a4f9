"""Shape operations: ``flatten`` / ``view`` / ``reshape`` / ``transpose`` / ``permute`` / indexing of non-unit
dims / reductions over positions: positions move, units are re-indexed (a Linear after a flattened conv map reads
``H W`` features per channel); padding of the channel axis (option-A shortcuts) shifts them. A reshape that splits
the unit axis over several dims (attention heads, a channel shuffle written as view/transpose/view) is read whole:
the units reaching it are kept, and it is listed in the pass's report."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..nodes import UnitMap
from .base import WalkerBase

__all__ = ["ShapeOps"]


class ShapeOps(WalkerBase):
    def reshape(self, node: fx.Node, src: fx.Node, val: UnitMap, in_shape: tuple[int, ...],
                out_shape: tuple[int, ...]) -> None:
        if val.is_fixed:
            self.vals[node.name] = val
            self.back[node.name] = lambda need: [(src, None)]
            return
        a = val.axis
        if in_shape[0] != out_shape[0]:
            last = a % len(in_shape) == len(in_shape) - 1
            if not (last and out_shape[-1] == in_shape[-1]):
                self.refuse(node, "a reshape that moves the batch dim and the unit axis")
            # units on the last dim, kept whole: positions and batch rearranged (Swin's window partition and reverse)
            self.vals[node.name] = UnitMap(len(out_shape) - 1, val.cmap, val.merged, val.fixed, val.offset)
            self.back[node.name] = lambda need: [(src, need)]
            self.links[node.name] = ("pass", src)
            return
        view = [1] * (len(in_shape) - 1)
        view[a - 1] = -1
        grid = torch.arange(in_shape[a]).view(view).expand(in_shape[1:]).reshape(out_shape[1:])
        if len(out_shape) == 2:
            axis, line = 1, grid.reshape(-1)
        else:
            axis, line = -1, None
            for d in range(grid.ndim):
                cand = grid.movedim(d, 0)
                first = cand.reshape(cand.shape[0], -1)[:, :1]
                if bool((cand.reshape(cand.shape[0], -1) == first).all()):
                    axis, line = d + 1, first.reshape(-1)
                    break
            if line is None:  # attention's heads, a view/transpose/view channel shuffle: kept whole, said so
                self.read_whole(node, "a reshape splits the unit axis over several dims (attention heads, a channel "
                                      "shuffle): the units reaching it are kept")
                return
        cmap = {s: idx[line] for s, idx in val.cmap.items()}
        self.vals[node.name] = UnitMap(axis, cmap, val.merged[line], val.fixed[line], val.offset)
        n = in_shape[a]

        def back(need: torch.Tensor, line: torch.Tensor = line, n: int = n) -> list:
            out = torch.zeros(n, dtype=torch.bool, device=need.device)
            return [(src, out.index_put((line.to(need.device),), need, accumulate=True))]
        self.back[node.name] = back
        self.links[node.name] = ("reshape", src, line, n)

    def transpose(self, node: fx.Node, src: fx.Node, val: UnitMap, ndim: int) -> None:
        target = node.target
        dims = list(node.args[1:])
        if target in ("permute", torch.permute) and len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = list(dims[0])
        dims = [d % ndim for d in dims]
        if target in ("transpose", torch.transpose):
            a, b = dims
            axis = b if val.axis == a else a if val.axis == b else val.axis
        else:
            axis = dims.index(val.axis)
        self.moved(node, src, val, axis)

    def reduce(self, node: fx.Node, src: fx.Node, val: UnitMap, ndim: int) -> None:
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if dims is None:
            self.refuse(node, "a reduction over every dim mixes the units")
        dims = [d % ndim for d in ((dims,) if isinstance(dims, int) else dims)]
        if val.axis in dims:
            self.refuse(node, "a reduction over the unit axis mixes the units")
        self.moved(node, src, val, val.axis if keep else val.axis - sum(d < val.axis for d in dims))

    def getitem(self, node: fx.Node, src: fx.Node, val: UnitMap, ndim: int) -> None:
        index = node.args[1]
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis or i is None for i in index):
            self.refuse(node, "indexing with ... or None")
        if len(index) > val.axis and index[val.axis] != slice(None):
            self.refuse(node, "indexing the unit axis")
        self.moved(node, src, val, val.axis - sum(isinstance(i, int) for i in index[:val.axis]))

    def permute_channels(self, node: fx.Node, src: fx.Node, val: UnitMap, perm: torch.Tensor) -> None:
        """Output channel ``i`` is input channel ``perm[i]`` (``nn.ChannelShuffle``): units followed one by one."""
        cmap = {s: idx[perm] for s, idx in val.cmap.items()}
        self.vals[node.name] = UnitMap(val.axis, cmap, val.merged[perm], val.fixed[perm], val.offset)
        n = len(perm)

        def back(need: torch.Tensor, perm: torch.Tensor = perm, n: int = n) -> list:
            out = torch.zeros(n, dtype=torch.bool, device=need.device)
            return [(src, out.index_put((perm.to(need.device),), need, accumulate=True))]
        self.back[node.name] = back
        self.links[node.name] = ("perm", src)  # the export keeps its whole axis: the module shuffles all channels

    def pad_channels(self, node: fx.Node, src: fx.Node, val: UnitMap, pad: int, n: int) -> None:
        """Zero channels added on both sides of the unit axis (the option-A shortcut)."""
        cmap = {s: F.pad(idx, (pad, pad), value=-1) for s, idx in val.cmap.items()}
        self.vals[node.name] = UnitMap(1, cmap, F.pad(val.merged, (pad, pad)), F.pad(val.fixed, (pad, pad)), val.offset)
        self.back[node.name] = lambda need, src=src, pad=pad, n=n: [(src, need[pad:pad + n])]
        self.links[node.name] = ("pad", src, pad, n)
