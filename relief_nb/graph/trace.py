"""The model's dependency graph, traced with ``torch.fx``: which prunable layer's units every tensor carries.

:func:`trace_graph` symbolically traces the model (``torch.fx``), runs one zero example through the traced graph
for the shapes, and walks the nodes once. Every tensor gets a *unit axis* (dim 1 of a conv map, the last dim of
a Linear's input or output, sequences ``(N, T, F)`` included) and a *channel map*: for each prunable layer whose
units it carries, the unit index at each position of that axis (``-1`` where none). How each operation maps units:

* ``Conv2d`` / ``Linear``: a new source, ``arange(units)``; it reads its input axis through its kernels (a
  grouped / depthwise conv's filter reads the input channels of its group only). A layer named in ``ignore=``
  (or under an ignored module path) stays dense: it reads all its input and writes a fixed (unprunable) tensor.
* elementwise activations with ``f(0) = 0`` (ReLU, ReLU6, LeakyReLU, GELU, SiLU, Tanh, Hardswish, ELU, as
  modules, functions or methods), dropout, identity, pooling over positions, ``mean`` over positions or tokens,
  BatchNorm: pass units through. Because ``f(0) = 0``, a unit whose inputs and bias are all removed emits zero,
  which the paper's dead-unit rule assumes (our extension from ReLU to these activations).
* LayerNorm over the unit axis passes units through but mixes the statistics of all of them: its output
  channels count as *merged* (below).
* ``flatten`` / ``view`` / ``reshape`` / ``transpose`` / ``permute`` / indexing of non-unit dims: positions move,
  units are re-indexed (a Linear after a flattened conv map reads ``H W`` features per channel).
* ``torch.cat`` along the unit axis: the maps are concatenated. A residual addition (identity, option-A, or
  projection shortcut), ``cat`` along another axis, or adding a constant: each channel carries the units of
  every branch and is *merged*: the dead-unit rule does not apply to it (a branch's unit may be silent while
  the sum is not), and the merge is a *residual group*: a channel of the sum stays while anything downstream
  reads it, so every branch keeps it unless its own rule cuts it (see :mod:`relief_nb.relief`).
* multiplication by a per-channel buffer named ``*mask`` (the package's option-A shortcut mask) is a *gate*
  that the residual rule may close per channel.

Anything else that touches a prunable unit is refused (:class:`UnsupportedModuleError`) with the module path or
op and what to do: pass its path in ``ignore=`` to leave it dense. Ops on fixed tensors only (the internals of
an ignored attention block, say) need no analysis.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..core.masks import current_mask
from ..core.modes import eval_mode
from ..models.zoo import OptionAShortcut

__all__ = ["Gate", "GraphLayer", "Merge", "ModelGraph", "UnsupportedModuleError", "alive_units", "layer_reads",
           "trace_graph"]


class UnsupportedModuleError(TypeError):
    """The model contains a module or an operation NNrelief cannot reason about."""


ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish, nn.ELU,
                      nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.tanh, F.tanh,
                        F.hardswish, F.elu, F.dropout, torch.nn.functional.dropout2d, torch.clone}
ACTIVATION_METHODS = {"relu", "relu_", "tanh", "contiguous", "clone", "float", "to", "detach"}
POOL_FUNCTIONS = {F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d}
RESHAPE = {torch.flatten, "flatten", "view", "reshape"}
ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
METADATA = {"size", "dim", "shape", "dtype", "device", "ndim", "numel"}
MEAN = {torch.mean, "mean", torch.sum, "sum", torch.amax, "amax"}


@dataclass
class GraphLayer:
    """A Conv2d or Linear layer: its units are its output channels / neurons."""

    name: str
    module: nn.Conv2d | nn.Linear
    bn: nn.BatchNorm2d | nn.BatchNorm1d | None = None  # a BatchNorm that reads this layer's output directly
    bn_name: str | None = None
    out_shape: tuple[int, ...] = ()  # per example, e.g. (C, H, W), (F,) or (T, F)
    in_shape: tuple[int, ...] = ()
    features_per_channel: int = 1  # > 1 for a Linear that reads a flattened conv map
    input_map: dict[str, torch.Tensor] = field(default_factory=dict)  # source layer -> unit per input feature
    input_merged: torch.Tensor | None = None  # per input feature: mixes several units / fixed signal
    input_fixed: torch.Tensor | None = None  # per input feature: carries a fixed (unprunable) signal

    @property
    def kind(self) -> str:
        return "conv" if isinstance(self.module, nn.Conv2d) else "linear"

    @property
    def in_units(self) -> int:
        m = self.module
        units = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        return units // self.features_per_channel

    @property
    def out_units(self) -> int:
        m = self.module
        return m.out_channels if isinstance(m, nn.Conv2d) else m.out_features

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


@dataclass
class Merge:
    """A residual addition: per channel, each branch may be cut by the residual rule.

    ``cuts[i]`` says how branch ``i`` is cut: a layer name (remove that filter), a :class:`Gate` (close it), or
    None (an identity shortcut or a sum: nothing to cut)."""

    node: str
    axis: int
    ndim: int
    cuts: list[str | Gate | None]


@dataclass
class Norm:
    """A BatchNorm / LayerNorm whose channels carry ``input_map``: masked where every unit it carries is removed."""

    name: str
    module: nn.Module
    input_map: dict[str, torch.Tensor]
    fixed: torch.Tensor  # per channel: carries a fixed (unprunable) signal
    direct: str | None  # the layer it reads directly (nothing in between), if any


@dataclass
class _Val:
    """What the walk knows about one tensor."""

    axis: int = -1
    cmap: dict[str, torch.Tensor] = field(default_factory=dict)
    merged: torch.Tensor | None = None
    fixed: torch.Tensor | None = None  # per channel: carries signal of no prunable unit (input, constant, ...)

    @property
    def is_fixed(self) -> bool:
        return not self.cmap


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

    @property
    def nodes(self) -> list[GraphLayer]:
        return list(self.layer_map.values())

    def layers(self) -> list[GraphLayer]:
        return list(self.layer_map.values())

    def layer(self, name: str) -> GraphLayer:
        if name in self.layer_map:
            return self.layer_map[name]
        raise KeyError(f"no prunable layer named {name!r}; layers: {list(self.layer_map)}")



class _Tracer(fx.Tracer):
    def __init__(self, ignore: tuple[str, ...]) -> None:
        super().__init__()
        self.ignore = ignore
        self.proxy_buffer_attributes = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, OptionAShortcut) or _ignored(qualname, self.ignore):
            return True
        return super().is_leaf_module(m, qualname)


def _ignored(path: str, ignore: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in ignore)


def _fixed_val(n: int = 0) -> _Val:
    return _Val(-1, {}, torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool))


# model -> (structure key, graph): a repeated relief_prune(model, batch) reuses its graph (tracing costs ~1-3 ms,
# as much as the whole pass on LeNet-300-100); weak keys, so the cache never keeps a model alive.
_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[Hashable, ModelGraph]] = weakref.WeakKeyDictionary()
_PLAIN = (bool, int, float, str, type(None))


def structure_key(model: nn.Module) -> Hashable:
    """Everything a trace depends on, cheaply: every submodule (identity, class, forward, plain attributes such
    as ``training`` or a flag that steers ``forward``) and every parameter and buffer (identity, shape, dtype,
    device). Replacing a submodule or a parameter, changing a flag or pruning a layer changes the key."""
    key = []
    for path, m in model.named_modules():
        plain = tuple((k, v) for k, v in m.__dict__.items()
                      if isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(x, _PLAIN) for x in v)))
        tensors = tuple((n, id(t), tuple(t.shape), t.dtype, t.device)
                        for n, t in (*m._parameters.items(), *m._buffers.items()) if t is not None)
        key.append((path, id(m), type(m), id(m.__dict__.get("forward", type(m).forward)), plain, tensors))
    return tuple(key)


def trace_graph(model: nn.Module, input_shape: tuple[int, ...], ignore: Iterable[str] = (),
                cache: bool = True) -> ModelGraph:
    """Trace ``model`` for examples of ``input_shape`` into its :class:`ModelGraph` (see the module docstring).

    Raises :class:`UnsupportedModuleError` for a model ``torch.fx`` cannot trace, and naming the module path or
    op for anything NNrelief cannot prune; nothing about the model is changed. The graph of the last call is
    reused while the model's :func:`structure_key`, ``input_shape`` and ``ignore`` stay the same (``cache=False``
    traces anew).
    """
    ignore = tuple(ignore)
    key = (structure_key(model), tuple(input_shape), ignore)
    hit = _CACHE.get(model) if cache else None
    if hit is not None and hit[0] == key:
        return hit[1]
    graph = _trace(model, tuple(input_shape), ignore)
    _CACHE[model] = (key, graph)
    return graph


def _trace(model: nn.Module, input_shape: tuple[int, ...], ignore: tuple[str, ...]) -> ModelGraph:
    modules = dict(model.named_modules())
    for path in ignore:
        if path not in modules:
            raise KeyError(f"ignore= names {path!r}, which is not a module of the model")
    tracer = _Tracer(ignore)
    try:
        fx_graph = tracer.trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, ... for dynamic control flow
        raise UnsupportedModuleError(
            f"torch.fx cannot trace the model ({type(err).__name__}: {err}); NNrelief needs a forward without "
            "data-dependent control flow. Wrap untraceable parts in a submodule and pass its path in ignore=, "
            "or make forward traceable") from err
    gm = fx.GraphModule(model, fx_graph)
    param = next(model.parameters(), None)
    example = torch.zeros(1, *input_shape, dtype=param.dtype if param is not None else torch.float32,
                          device=param.device if param is not None else None)
    with eval_mode(model):
        _ShapeRecorder(model, graph=gm.graph).run(example)
    return _Walker(model, gm, tuple(input_shape), ignore).walk()


class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph on the model's own modules once, recording each tensor's shape."""

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        n.meta["relief_shape"] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        return out


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    return node.meta.get("relief_shape")


class _Walker:
    def __init__(self, model: nn.Module, gm: fx.GraphModule, input_shape: tuple[int, ...],
                 ignore: tuple[str, ...]) -> None:
        self.model, self.gm, self.input_shape, self.ignore = model, gm, input_shape, ignore
        self.modules = dict(model.named_modules())
        self.vals: dict[str, _Val | None] = {}
        self.layers: dict[str, GraphLayer] = {}
        self.node_layer: dict[str, str] = {}
        self.merges: list[Merge] = []
        self.norms: list[Norm] = []
        self.escapes: dict[str, torch.Tensor] = {}
        self.back: dict[str, Back] = {}
        self.chain = True
        self.gates: dict[str, Gate] = {}  # fx node name of a gate mul -> gate
        self.links: dict[str, tuple] = {}  # fx node name -> how its unit axis relates to its inputs' (export)

    # ---------------------------------------------------------------- helpers
    def where(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"module {node.target} ({type(self.modules[node.target]).__name__})"
        target = getattr(node.target, "__name__", str(node.target))
        stack = node.meta.get("nn_module_stack")
        inside = f" inside module {list(stack)[-1]}" if stack else ""
        return f"op {target} (fx node {node.name}{inside})"

    def refuse(self, node: fx.Node, why: str) -> None:
        raise UnsupportedModuleError(
            f"{self.where(node)}: {why}; NNrelief cannot prune through it. Pass the path of the module that "
            "contains it in ignore= to leave that part dense")

    def escape(self, val: _Val) -> None:
        for src, idx in val.cmap.items():
            hit = idx[idx >= 0]
            self.escapes[src][hit] = True

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        out: list[fx.Node] = []
        for a in node.all_input_nodes:
            if self.vals.get(a.name) is not None:
                out.append(a)
        return out

    def passthrough(self, node: fx.Node, src: fx.Node) -> None:
        self.vals[node.name] = self.vals[src.name]
        self.back[node.name] = lambda need, src=src: [(src, need)]
        self.links[node.name] = ("pass", src)

    def opaque(self, node: fx.Node) -> None:
        """All tensor inputs are read whole; the output is fixed."""
        ins = self.tensor_args(node)
        for a in ins:
            self.escape(self.vals[a.name])
        shape = _shape(node)
        self.vals[node.name] = _fixed_val() if shape is not None else None
        self.back[node.name] = lambda need, ins=ins: [(a, None) for a in ins]
        self.links[node.name] = ("opaque", ins)

    # ---------------------------------------------------------------- the walk
    def walk(self) -> ModelGraph:
        for node in self.gm.graph.nodes:
            shape = _shape(node)
            if node.op == "placeholder" or node.op == "get_attr":
                self.vals[node.name] = _fixed_val() if shape is not None else None
                self.back[node.name] = lambda need: []
            elif node.op == "output":
                self.opaque(node)
            elif shape is None:  # sizes, shapes: no units; tuples of tensors carrying units: refused
                ins = self.tensor_args(node)
                meta = node.target in METADATA or (node.target is getattr and node.args[1] in METADATA)
                if not meta and any(not self.vals[a.name].is_fixed for a in ins) and not (
                        node.op == "call_module" and _ignored(node.target, self.ignore)):
                    self.refuse(node, "it returns something other than a tensor (a tuple?) from prunable units")
                if node.op == "call_module" and _ignored(node.target, self.ignore):
                    for a in ins:
                        self.escape(self.vals[a.name])
                self.vals[node.name] = None
                self.back[node.name] = lambda need: []
            else:
                ins = self.tensor_args(node)
                if node.op == "call_module":
                    self.call_module(node, ins)
                elif all(self.vals[a.name].is_fixed for a in ins):
                    self.vals[node.name] = _fixed_val()
                    self.back[node.name] = lambda need, ins=ins: [(a, None) for a in ins]
                else:
                    self.call_op(node, ins)
        if not self.layers:
            raise UnsupportedModuleError("the model has no Conv2d or Linear layer to prune")
        out_axis = {k: (v.axis if v is not None and not v.is_fixed else -1) for k, v in self.vals.items()}
        out_len = {}
        for node in self.gm.graph.nodes:
            v, shape = self.vals.get(node.name), _shape(node)
            if v is not None and not v.is_fixed and shape is not None:
                out_len[node.name] = shape[v.axis]
        fixed_pos = {k: v.fixed for k, v in self.vals.items() if v is not None and not v.is_fixed}
        return ModelGraph(self.gm, self.input_shape, self.layers, self.node_layer, self.merges, self.norms,
                          self.escapes, self.back, out_axis, out_len, self.links, fixed_pos, self.ignore, self.chain)

    def call_module(self, node: fx.Node, ins: list[fx.Node]) -> None:
        path, m = node.target, self.modules[node.target]
        if _ignored(path, self.ignore):
            self.opaque(node)
            return
        if not ins:
            self.refuse(node, "it takes no tensor input")
        src = ins[0]
        val = self.vals[src.name]
        in_shape, out_shape = _shape(src), _shape(node)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            self.layer(node, path, m, val, in_shape, out_shape)
        elif val.is_fixed and not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, POOL_MODULES + ACTIVATION_MODULES):
                self.refuse(node, f"{type(m).__name__} has parameters NNrelief does not know how to prune")
            self.vals[node.name] = _fixed_val()
            self.back[node.name] = lambda need, ins=ins: [(a, None) for a in ins]
        elif isinstance(m, ACTIVATION_MODULES):
            self.passthrough(node, src)
        elif isinstance(m, POOL_MODULES):
            self.need_axis(node, val, 1, len(in_shape))
            self.passthrough(node, src)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if not val.is_fixed:
                self.need_axis(node, val, 1, len(in_shape))
            self.norm(node, path, m, src, val)
            self.passthrough(node, src)
            self.links[node.name] = ("bn", src)
        elif isinstance(m, nn.LayerNorm):
            if len(m.normalized_shape) != 1 or (not val.is_fixed and val.axis != len(in_shape) - 1):
                self.refuse(node, "only a LayerNorm over the unit axis (the last dim) is supported")
            self.norm(node, path, m, src, val)
            if val.is_fixed:
                self.vals[node.name] = val
                self.back[node.name] = lambda need, src=src: [(src, None)]
            else:
                merged = _Val(val.axis, val.cmap, torch.ones_like(val.merged), val.fixed)
                self.vals[node.name] = merged
                self.back[node.name] = lambda need, src=src: [(src, need)]
                self.links[node.name] = ("ln", src)
                self.chain = False
        elif isinstance(m, nn.Flatten):
            self.reshape(node, src, val, in_shape, out_shape)
        elif isinstance(m, OptionAShortcut):
            self.need_axis(node, val, 1, len(in_shape))
            pad, n = m.pad, in_shape[1]
            cmap = {s: F.pad(idx, (pad, pad), value=-1) for s, idx in val.cmap.items()}
            self.vals[node.name] = _Val(1, cmap, F.pad(val.merged, (pad, pad)), F.pad(val.fixed, (pad, pad)))
            self.back[node.name] = lambda need, src=src, pad=pad, n=n: [(src, need[pad:pad + n])]
            self.links[node.name] = ("pad", src, pad, n)
        else:
            self.refuse(node, f"{type(m).__name__} is not a module NNrelief knows")

    def need_axis(self, node: fx.Node, val: _Val, axis: int, ndim: int) -> None:
        if not val.is_fixed and val.axis % ndim != axis % ndim:
            self.refuse(node, f"it needs the units on dim {axis}, but they are on dim {val.axis}")

    def norm(self, node: fx.Node, path: str, m: nn.Module, src: fx.Node, val: _Val) -> None:
        direct = self.node_layer.get(src.name)
        n = m.num_features if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) else m.normalized_shape[0]
        fixed = val.fixed if not val.is_fixed else torch.ones(n, dtype=torch.bool)
        self.norms.append(Norm(path, m, val.cmap, fixed, direct))
        if direct is not None and isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and self.layers[direct].bn is None:
            self.layers[direct].bn, self.layers[direct].bn_name = m, path
        elif not val.is_fixed:
            self.chain = False  # a norm that is not right after a layer (after an activation, a merge)

    def layer(self, node: fx.Node, path: str, m: nn.Conv2d | nn.Linear, val: _Val,
              in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        if path in self.layers:
            self.refuse(node, "a Conv2d / Linear layer called twice in forward (shared weights) cannot be pruned "
                              "per call")
        conv = isinstance(m, nn.Conv2d)
        if conv and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            self.refuse(node, "only numeric zero padding is supported")
        axis = 1 if conv else len(in_shape) - 1
        self.need_axis(node, val, axis, len(in_shape))
        n_in = in_shape[axis]
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
        self.vals[node.name] = _Val(out_axis, {path: torch.arange(n_out)}, torch.zeros(n_out, dtype=torch.bool),
                                    torch.zeros(n_out, dtype=torch.bool))
        src = node.all_input_nodes[0]
        self.back[node.name] = lambda need, src=src, layer=layer: [(src, layer_reads(layer))]
        self.links[node.name] = ("layer", src)

    # ---------------------------------------------------------------- functions and methods
    def call_op(self, node: fx.Node, ins: list[fx.Node]) -> None:
        target = node.target
        moving = [a for a in ins if not self.vals[a.name].is_fixed]
        src = moving[0]
        val = self.vals[src.name]
        in_shape, out_shape = _shape(src), _shape(node)
        ndim = len(in_shape)
        elementwise = target in ACTIVATION_FUNCTIONS or (node.op == "call_method" and target in ACTIVATION_METHODS)
        if elementwise and len(moving) == 1 and len(ins) == 1:
            self.passthrough(node, src)
            return
        if target in POOL_FUNCTIONS:
            self.need_axis(node, val, 1, ndim)
            self.passthrough(node, src)
            return
        if target in RESHAPE:
            self.reshape(node, src, val, in_shape, out_shape)
            return
        if target in ("transpose", torch.transpose, "permute", torch.permute):
            dims = [a for a in node.args[1:]] if target in ("transpose", "permute") else list(node.args[1:])
            if target in ("permute", torch.permute) and len(dims) == 1 and isinstance(dims[0], (list, tuple)):
                dims = list(dims[0])
            dims = [d % ndim for d in dims]
            if target in ("transpose", torch.transpose):
                a, b = dims
                axis = b if val.axis == a else a if val.axis == b else val.axis
            else:
                axis = dims.index(val.axis)
            self.vals[node.name] = _Val(axis, val.cmap, val.merged, val.fixed)
            self.back[node.name] = lambda need, src=src: [(src, need)]
            self.links[node.name] = ("pass", src)
            return
        if target in MEAN:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
            if dims is None:
                self.refuse(node, "a reduction over every dim mixes the units")
            dims = [d % ndim for d in ((dims,) if isinstance(dims, int) else dims)]
            if val.axis in dims:
                self.refuse(node, "a reduction over the unit axis mixes the units")
            axis = val.axis if keep else val.axis - sum(d < val.axis for d in dims)
            self.vals[node.name] = _Val(axis, val.cmap, val.merged, val.fixed)
            self.back[node.name] = lambda need, src=src: [(src, need)]
            self.links[node.name] = ("pass", src)
            return
        if target is operator.getitem:
            self.getitem(node, src, val, ndim)
            return
        if target in ADD or target is torch.cat:
            self.merge(node, ins, moving, out_shape)
            return
        if target in (operator.mul, torch.mul, "mul"):
            self.mul(node, ins, moving, src, val)
            return
        self.refuse(node, "it is not an operation NNrelief knows on a tensor carrying prunable units")

    def reshape(self, node: fx.Node, src: fx.Node, val: _Val, in_shape: tuple[int, ...],
                out_shape: tuple[int, ...]) -> None:
        if val.is_fixed:
            self.vals[node.name] = val
            self.back[node.name] = lambda need: [(src, None)]
            return
        if in_shape[0] != out_shape[0]:
            self.refuse(node, "a reshape that moves the batch dim")
        a = val.axis
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
            if line is None:
                self.refuse(node, "a reshape that splits or mixes the unit axis")
        cmap = {s: idx[line] for s, idx in val.cmap.items()}
        self.vals[node.name] = _Val(axis, cmap, val.merged[line], val.fixed[line])
        n = in_shape[a]

        def back(need: torch.Tensor, line: torch.Tensor = line, n: int = n) -> list:
            out = torch.zeros(n, dtype=torch.bool, device=need.device)
            return [(src, out.index_put((line.to(need.device),), need, accumulate=True))]
        self.back[node.name] = back
        self.links[node.name] = ("reshape", src, line, n)

    def getitem(self, node: fx.Node, src: fx.Node, val: _Val, ndim: int) -> None:
        index = node.args[1]
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis or i is None for i in index):
            self.refuse(node, "indexing with ... or None")
        if len(index) > val.axis and index[val.axis] != slice(None):
            self.refuse(node, "indexing the unit axis")
        axis = val.axis - sum(isinstance(i, int) for i in index[:val.axis])
        self.vals[node.name] = _Val(axis, val.cmap, val.merged, val.fixed)
        self.back[node.name] = lambda need, src=src: [(src, need)]
        self.links[node.name] = ("pass", src)

    def mul(self, node: fx.Node, ins: list[fx.Node], moving: list[fx.Node], src: fx.Node, val: _Val) -> None:
        operands = [a for a in node.args if isinstance(a, fx.Node) and a in moving]
        if len(operands) > 1:
            self.refuse(node, "a product of two tensors carrying prunable units")
        other = next((a for a in node.args if isinstance(a, fx.Node) and a is not src), None)
        gate = self.find_gate(other) if other is not None else None
        if gate is not None:
            self.gates[node.name] = gate
            self.vals[node.name] = val

            def back(need: torch.Tensor, gate: Gate = gate) -> list:
                gate.mask.mul_(need.to(gate.mask.dtype))  # nobody reads the channel: close the gate
                return [(src, need & (gate.mask != 0))]
            self.back[node.name] = back
            self.links[node.name] = ("gate", src, gate)
            return
        # a scale by a constant or parameter: units pass through (a removed unit still emits zero)
        self.vals[node.name] = val
        self.back[node.name] = lambda need: [(src, need)] + [(a, None) for a in ins if a is not src]
        self.links[node.name] = ("scale", src, other)

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
        self.vals[node.name] = _Val(axis, cmap, merged, fixed)
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
            n = _shape(t)[dim]
            lengths.append(n)
            if v is None or v.is_fixed:
                v = _Val(dim, {}, torch.ones(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool))
            elif v.axis != dim:
                self.refuse(node, "concatenated tensors carry units on different axes")
            parts.append(v)
        sources = {s for v in parts for s in v.cmap}
        cmap = {s: torch.cat([v.cmap.get(s, torch.full((n,), -1)) for v, n in zip(parts, lengths)]) for s in sources}
        self.vals[node.name] = _Val(dim, cmap, torch.cat([v.merged for v in parts]),
                                    torch.cat([v.fixed for v in parts]))
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
            if node.op == "call_module" and isinstance(self.modules[node.target], (nn.BatchNorm1d, nn.BatchNorm2d,
                                                                                  nn.Identity, nn.Dropout)):
                node = node.args[0]
                continue
            return None


def _has_scalar(node: fx.Node) -> bool:
    return any(isinstance(a, (int, float)) and a != 0 for a in node.args)


def layer_reads(layer: GraphLayer) -> torch.Tensor:
    """Boolean per input feature of ``layer``: does any surviving connection read it?"""
    m = layer.module
    mask = current_mask(m, "weight") != 0
    if mask.ndim == 4:
        g = m.groups
        return mask.reshape(g, mask.shape[0] // g, mask.shape[1], -1).any(dim=3).any(dim=1).reshape(-1)
    return mask.any(dim=0)


def alive_units(layer: GraphLayer) -> torch.Tensor:
    """Boolean per unit of ``layer``: does it keep an incoming connection or its bias?"""
    m = layer.module
    alive = (current_mask(m, "weight") != 0).reshape(layer.out_units, -1).any(dim=1)
    if getattr(m, "bias", None) is not None:
        alive |= current_mask(m, "bias") != 0
    return alive
