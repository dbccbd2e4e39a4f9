"""What the dependency graph is made of: prunable layers (:class:`GraphLayer`), residual merges (:class:`Merge`)
and their gates (:class:`Gate`), normalizations (:class:`Norm`), the graph itself (:class:`ModelGraph`), and what
the walk knows about one tensor (:class:`UnitMap`). The walk that builds them is :mod:`relief_nb.graph.trace`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from ..core.masks import current_mask
from ..core.units import in_units, is_conv, out_units, unit_major

__all__ = ["Back", "Gate", "GraphLayer", "Merge", "ModelForwardError", "ModelGraph", "Norm", "UnitMap",
           "UnsupportedModuleError",
           "alive_units", "fixed_map", "layer_reads", "shape_of", "to_host", "to_model"]


def to_host(t: torch.Tensor) -> torch.Tensor:
    """A model tensor (statistics, masks) brought to the graph's bookkeeping, which lives on the CPU by design:
    channel maps and needed-channel masks are small and indexed element by element."""
    return t.detach().cpu()


def to_model(t: torch.Tensor, like: torch.Tensor, dtype: bool = False) -> torch.Tensor:
    """Bookkeeping brought next to the model tensor ``like`` (its device; its dtype too with ``dtype``). With
    :func:`to_host` the only crossing between the graph and the model: the device guard
    (tests/test_device_guard.py) checks that no other place mixes them."""
    return t.to(like.device, like.dtype) if dtype else t.to(like.device)


class UnsupportedModuleError(TypeError):
    """The model contains a module or an operation NNrelief cannot reason about."""


class ModelForwardError(ValueError):
    """The model's own forward raises on an example batch: the model (or the inputs given for it) is wrong, not the
    tracing."""


@dataclass
class GraphLayer:
    """A weighted-sum layer (Linear, a convolution of any dimension, an embedding table): its units are its output
    channels / features (:mod:`relief_nb.core.units`)."""

    name: str
    module: nn.Module
    bn: nn.Module | None = None  # a BatchNorm that reads this layer's output directly
    bn_name: str | None = None
    out_shape: tuple[int, ...] = ()  # per example, e.g. (C, H, W), (F,) or (T, F)
    in_shape: tuple[int, ...] = ()
    features_per_channel: int = 1  # > 1 for a Linear that reads a flattened conv map
    input_map: dict[str, torch.Tensor] = field(default_factory=dict)  # source layer -> unit per input feature
    input_merged: torch.Tensor | None = None  # per input feature: mixes several units / fixed signal
    input_fixed: torch.Tensor | None = None  # per input feature: carries a fixed (unprunable) signal

    @property
    def kind(self) -> str:
        """``conv`` (pruned with ``alpha_conv``), ``linear`` or ``embedding`` (with ``alpha_fc``)."""
        if is_conv(self.module):
            return "conv"
        return "embedding" if isinstance(self.module, nn.Embedding) else "linear"

    @property
    def in_units(self) -> int:
        return in_units(self.module) // self.features_per_channel

    @property
    def out_units(self) -> int:
        return out_units(self.module)

    def layers(self) -> list[GraphLayer]:
        return [self]


@dataclass
class Gate:
    """A per-channel mask buffer multiplied into a branch (the option-A shortcut mask)."""

    module: nn.Module
    buffer: str

    @property
    def mask(self) -> torch.Tensor:
        return getattr(self.module, self.buffer)

    def close(self, need: torch.Tensor) -> torch.Tensor:
        """Close the channels nothing downstream needs; return, on the host, the channels still needed and open.

        The graph's bookkeeping (on the CPU) meets the model's buffer here, through :func:`to_model` and
        :func:`to_host`."""
        mask = self.mask
        mask.mul_(to_model(need, mask, dtype=True))
        return to_host(need) & to_host(mask != 0)


@dataclass
class Merge:
    """A residual addition: per channel, each branch may be cut by the residual rule.

    ``cuts[i]`` says how branch ``i`` is cut: a layer name (remove that filter), a :class:`Gate` (close it), or
    None (an identity shortcut or a sum: nothing to cut)."""

    node: str
    axis: int
    ndim: int
    cuts: list[str | Gate | None]

    @property
    def conv(self) -> bool:
        """A sum of convolution maps (units on dim 1 of an (N, C, *positions) tensor): ruled with ``alpha_conv``."""
        return self.axis == 1 and self.ndim >= 3


@dataclass
class Norm:
    """A BatchNorm / LayerNorm whose channels carry ``input_map``: masked where every unit it carries is removed."""

    name: str
    module: nn.Module
    input_map: dict[str, torch.Tensor]
    fixed: torch.Tensor  # per channel: carries a fixed (unprunable) signal
    direct: str | None  # the layer it reads directly (nothing in between), if any


@dataclass
class UnitMap:
    """What the walk knows about one tensor: its unit axis and, per prunable layer, the unit at each position."""

    axis: int = -1
    cmap: dict[str, torch.Tensor] = field(default_factory=dict)
    merged: torch.Tensor | None = None
    fixed: torch.Tensor | None = None  # per channel: carries signal of no prunable unit (input, constant, ...)
    offset: bool = False  # a removed unit does not emit zero here (it went through sigmoid, softplus, ...)

    @property
    def is_fixed(self) -> bool:
        return not self.cmap


def fixed_map(n: int = 0) -> UnitMap:
    """A tensor that carries no prunable unit (the input, a constant, an ignored module's output)."""
    return UnitMap(-1, {}, torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool))


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    """The tensor shape recorded for ``node`` by the trace's shape pass (None: not a tensor)."""
    return node.meta.get("relief_shape")


Back = Callable[[torch.Tensor], list[tuple[fx.Node, torch.Tensor]]]


@dataclass
class ModelGraph:
    """The traced dependency graph. ``layers()`` lists prunable layers in execution order."""

    gm: fx.GraphModule
    input_shape: tuple[int, ...]
    layer_map: dict[str, GraphLayer]
    node_layer: dict[str, str]  # fx node name -> layer name
    merges: list[Merge]
    norms: list[Norm]
    escapes: dict[str, torch.Tensor]  # per layer: units read by something that is not a prunable layer, or merged
    back: dict[str, Back]  # per fx node: needed channels of its output -> needed channels of its inputs
    out_axis: dict[str, int]  # per fx node with a tensor value: its unit axis (-1: fixed)
    out_len: dict[str, int]
    links: dict[str, tuple] = field(default_factory=dict)  # per fx node: how its unit axis follows its inputs
    fixed_pos: dict[str, torch.Tensor] = field(default_factory=dict)  # per fx node: positions of fixed signal
    ignored: tuple[str, ...] = ()
    chain: bool = True  # each layer reads only the one before it, through pass-through ops (the exporter's case)
    kept_whole: dict[str, str] = field(default_factory=dict)  # module path -> why it is left dense (pass's report)

    @property
    def nodes(self) -> list[GraphLayer]:
        return list(self.layer_map.values())

    def layers(self) -> list[GraphLayer]:
        return list(self.layer_map.values())

    def layer(self, name: str) -> GraphLayer:
        if name in self.layer_map:
            return self.layer_map[name]
        raise KeyError(f"no prunable layer named {name!r}; layers: {list(self.layer_map)}")


def layer_reads(layer: GraphLayer) -> torch.Tensor:
    """Boolean per input feature of ``layer``: does any surviving connection read it?"""
    m = layer.module
    mask = unit_major(m, current_mask(m, "weight") != 0)
    if is_conv(m):
        g = m.groups
        return mask.reshape(g, mask.shape[0] // g, mask.shape[1], -1).any(dim=3).any(dim=1).reshape(-1)
    return mask.any(dim=0)


def alive_units(layer: GraphLayer) -> torch.Tensor:
    """Boolean per unit of ``layer``: does it keep an incoming connection or its bias?"""
    m = layer.module
    alive = unit_major(m, current_mask(m, "weight") != 0).reshape(layer.out_units, -1).any(dim=1)
    if getattr(m, "bias", None) is not None:
        alive |= current_mask(m, "bias") != 0
    return alive
