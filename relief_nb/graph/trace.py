"""The model's dependency graph, traced with ``torch.fx``: which prunable layer's units every tensor carries.

:func:`trace_graph` symbolically traces the model (``torch.fx``), runs one zero example through the traced graph
for the shapes, and walks the nodes once. Every tensor gets a *unit axis* (dim 1 of a conv map, the last dim of
a Linear's input or output, sequences ``(N, T, F)`` included) and a *channel map*: for each prunable layer whose
units it carries, the unit index at each position of that axis (``-1`` where none). How each operation maps units:

* a weighted sum (``Linear``; ``Conv1d/2d/3d``; ``ConvTranspose1d/2d/3d``; ``Embedding``, which reads token
  ids): a new source, ``arange(units)``; it reads its input axis through its kernels (a grouped / depthwise conv's
  filter reads the input channels of its group only). A layer named in ``ignore=`` (or under an ignored module
  path) stays dense: it reads all its input and writes a fixed (unprunable) tensor.
* elementwise activations with ``f(0) = 0`` (ReLU, ReLU6, LeakyReLU, GELU, SiLU, Tanh, Hardswish, ELU, as
  modules, functions or methods), dropout, identity, pooling over positions, ``mean`` over positions or tokens,
  padding and resizing of positions, BatchNorm of any dimension, InstanceNorm, PReLU: pass units through. Because
  ``f(0) = 0``, a unit whose inputs and bias are all removed emits zero, which the paper's dead-unit rule assumes
  (our extension from ReLU to these activations).
* LayerNorm over the unit axis, and GroupNorm over groups of channels, pass units through but mix the statistics
  of the units they normalise together: their output channels count as *merged* (below).
* recurrent layers and modules named in ``ignore=`` read their inputs whole and are kept whole (listed in
  ``ModelGraph.kept_whole``).
* ``flatten`` / ``view`` / ``reshape`` / ``transpose`` / ``permute`` / indexing of non-unit dims: positions move,
  units are re-indexed (a Linear after a flattened conv map reads ``H W`` features per channel).
* ``torch.cat`` along the unit axis: the maps are concatenated. A residual addition (identity, option-A, or
  projection shortcut), ``cat`` along another axis, or adding a constant: each channel carries the units of
  every branch and is *merged*: the dead-unit rule does not apply to it (a branch's unit may be silent while
  the sum is not), and the merge is a *residual group*: a channel of the sum stays while anything downstream
  reads it, so every branch keeps it unless its own rule cuts it (see :mod:`relief_nb.pruning.relief`).
* multiplication by a per-channel buffer named ``*mask`` (the package's option-A shortcut mask) is a *gate*
  that the residual rule may close per channel.

The graph's parts are in :mod:`.nodes`, the op tables in :mod:`.taxonomy`, and each op family's rule in
:mod:`.ops` (layers, normalization, shape, merges); this module traces and dispatches.

Anything else that touches a prunable unit is refused (:class:`UnsupportedModuleError`) with the module path or
op and what to do: pass its path in ``ignore=`` to leave it dense. Ops on fixed tensors only (the internals of
an ignored attention block, say) need no analysis.
"""

from __future__ import annotations

import operator
import traceback
import weakref
from collections.abc import Hashable, Iterable
from pathlib import Path

import torch
import torch.fx as fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from ..core.batches import BatchSpec, as_spec, call_model, example_batch, fx_args
from ..core.modes import eval_mode
from ..core.units import UNIT_LAYERS
from ..models.zoo import OptionAShortcut
from .nodes import (
    Gate,
    GraphLayer,
    Merge,
    ModelForwardError,
    ModelGraph,
    UnsupportedModuleError,
    alive_units,
    fixed_map,
    layer_reads,
    shape_of,
)
from .ops.base import TORCH_DIR, ignored
from .ops.layers import LayerOps
from .ops.merges import MergeOps
from .ops.normalization import NormOps
from .ops.shape import ShapeOps
from .taxonomy import (
    ACTIVATION_FUNCTIONS,
    ACTIVATION_METHODS,
    ACTIVATION_MODULES,
    ADD,
    ATTENTION_MODULES,
    CHANNELWISE_MODULES,
    MEAN,
    METADATA,
    MUL,
    OFFSET_FUNCTIONS,
    OFFSET_METHODS,
    OFFSET_MODULES,
    POOL_FUNCTIONS,
    POOL_MODULES,
    RESHAPE,
    RESIZE_FUNCTIONS,
    RESIZE_MODULES,
    TRANSPOSE,
    acts_as_torch_layer,
    declared_role,
    refusal,
)

__all__ = ["Gate", "GraphLayer", "Merge", "ModelForwardError", "ModelGraph", "UnsupportedModuleError", "alive_units",
           "layer_reads", "structure_key", "trace_graph"]


class _Tracer(fx.Tracer):
    def __init__(self, ignore: tuple[str, ...]) -> None:
        super().__init__()
        self.ignore = ignore
        self.proxy_buffer_attributes = True
        self.record_stack_traces = True  # refusals then name the source line of the op

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, OptionAShortcut) or ignored(qualname, self.ignore) or acts_as_torch_layer(m) or \
                declared_role(m) is not None:
            return True
        return super().is_leaf_module(m, qualname)


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


def trace_graph(model: nn.Module, input_shape: tuple[int, ...] | BatchSpec, ignore: Iterable[str] = (),
                cache: bool = True) -> ModelGraph:
    """Trace ``model`` for examples of ``input_shape`` into its :class:`ModelGraph` (see the module docstring).

    ``input_shape`` is one example's shape (a float tensor), or a :class:`~relief_nb.core.batches.BatchSpec` for
    token ids, several inputs or keyword inputs (:func:`relief_nb.core.batches.spec_of` of a batch).

    Raises :class:`UnsupportedModuleError` for a model ``torch.fx`` cannot trace, and naming the module path or
    op for anything NNrelief cannot prune; nothing about the model is changed. The graph of the last call is
    reused while the model's :func:`structure_key`, ``input_shape`` and ``ignore`` stay the same (``cache=False``
    traces anew). The model is traced as it runs in eval mode, whatever its mode now: the graph is the network
    that is pruned and deployed, so stochastic depth, DropPath and dropout are the identity in it and a training-
    only branch (an auxiliary head) is not part of it; training itself is untouched.
    """
    ignore = tuple(ignore)
    input_shape = input_shape if isinstance(input_shape, BatchSpec) else tuple(input_shape)
    with eval_mode(model):  # the key too: switching train / eval reuses the graph
        key = (structure_key(model), input_shape, ignore)
        hit = _CACHE.get(model) if cache else None
        if hit is not None and hit[0] == key:
            return hit[1]
        graph = _trace(model, input_shape, ignore)
    _CACHE[model] = (key, graph)
    return graph


def _trace(model: nn.Module, input_shape: tuple[int, ...] | BatchSpec, ignore: tuple[str, ...]) -> ModelGraph:
    modules = dict(model.named_modules())
    # ignore= takes every name a refusal prints: a module path (``layer1.0.path@1`` names its second call), or an
    # op's fx node name
    paths = tuple(dict.fromkeys(name.split("@")[0] for name in ignore if name.split("@")[0] in modules))
    ops = frozenset(name for name in ignore if name.split("@")[0] not in modules)
    tracer = _Tracer(paths)
    try:
        fx_graph = tracer.trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, ... for dynamic control flow
        _raise_if_forward_fails(model, input_shape)  # the model's own error, if it has one, not fx's
        raise UnsupportedModuleError(
            f"torch.fx cannot trace the model ({type(err).__name__}: {err}); NNrelief needs a forward without "
            "data-dependent control flow. Wrap untraceable parts in a submodule and pass its path in ignore=, "
            "or make forward traceable") from err
    gm = fx.GraphModule(model, fx_graph)
    unknown = sorted(ops - {n.name for n in gm.graph.nodes})
    if unknown:
        raise KeyError(f"ignore= names {unknown[0]!r}, which is not a module of the model nor an op of its traced "
                       "graph; pass a module path or the fx node name an error message printed")
    param = next(model.parameters(), None)
    example = example_batch(as_spec(input_shape), 1, param.dtype if param is not None else torch.float32,
                            param.device if param is not None else None)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    try:
        _ShapeRecorder(model, graph=gm.graph).run(*fx_args(example, placeholders))  # in eval mode (trace_graph's)
    except Exception:
        _raise_if_forward_fails(model, input_shape)  # the model's own error, at the line of its code that raised
        raise
    walker = _Walker(model, gm, input_shape, paths)
    walker.ignored_ops = ops
    return walker.walk()


def _raise_if_forward_fails(model: nn.Module, input_shape: tuple[int, ...] | BatchSpec) -> None:
    """Run the model itself on two zero examples; if its forward raises, say so with the exception and the line of
    the model's code that raised (not torch's), as :class:`ModelForwardError`."""
    param = next(model.parameters(), None)
    spec = as_spec(input_shape)
    example = example_batch(spec, 2, param.dtype if param is not None else torch.float32,
                            param.device if param is not None else None)
    try:
        with eval_mode(model):
            call_model(model, example)
    except Exception as err:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(TORCH_DIR)]
        where = f", at {Path(frames[-1].filename).name}:{frames[-1].lineno}: {frames[-1].line}" if frames else ""
        first = str(err).splitlines()[0] if str(err) else ""
        raise ModelForwardError(f"an example batch of {spec} does not fit the model: its forward raises "
                                f"({type(err).__name__}: {first}){where}; pass inputs of the shape and dtype it "
                                "takes, or fix its forward") from err



class _ShapeRecorder(fx.Interpreter):
    """Runs the traced graph on the model's own modules once, recording each tensor's shape."""

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        n.meta["relief_shape"] = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        return out


class _Walker(LayerOps, NormOps, ShapeOps, MergeOps):
    """The walk over the traced nodes: each node dispatched to its op family's rule (:mod:`.ops`)."""

    def walk(self) -> ModelGraph:
        for node in self.gm.graph.nodes:
            shape = shape_of(node)
            if node.op == "placeholder" or node.op == "get_attr":
                self.vals[node.name] = fixed_map() if shape is not None else None
                self.back[node.name] = lambda need: []
            elif node.op == "output":
                self.opaque(node)
            elif node.name in self.ignored_ops:  # an op named in ignore=: read whole, its output fixed
                self.opaque(node)
                if shape is None:
                    self.vals[node.name] = None
            elif shape is None:  # sizes, shapes: no units; tuples of tensors carrying units: refused
                ins = self.tensor_args(node)
                meta = node.target in METADATA or (node.target is getattr and node.args[1] in METADATA)
                packs_output = node.op == "call_function" and bool(node.users) and all(  # a dataclass built
                    u.op == "output" for u in node.users)  # to return the outputs: read whole
                if packs_output:
                    self.opaque(node)
                    self.vals[node.name] = None
                    continue
                whole = self.kept_whole_reason(node)
                if whole is not None:  # read whole; its outputs (a tuple) are fixed
                    self.opaque(node)
                    self.vals[node.name] = None
                    continue
                if not meta and any(not self.vals[a.name].is_fixed for a in ins):
                    self.refuse(node, "it returns something other than a tensor (a tuple?) from prunable units")
                self.vals[node.name] = None
                self.back[node.name] = lambda need: []
            else:
                ins = self.tensor_args(node)
                if node.op == "call_module":
                    self.call_module(node, ins)
                elif all(self.vals[a.name].is_fixed for a in ins):
                    self.vals[node.name] = fixed_map()
                    self.back[node.name] = lambda need, ins=ins: [(a, None) for a in ins]
                else:
                    self.call_op(node, ins)
        if not self.layers:
            raise UnsupportedModuleError("the model has no layer to prune (Linear, a convolution, an embedding table)")
        out_axis = {k: (v.axis if v is not None and not v.is_fixed else -1) for k, v in self.vals.items()}
        out_len = {}
        for node in self.gm.graph.nodes:
            v, shape = self.vals.get(node.name), shape_of(node)
            if v is not None and not v.is_fixed and shape is not None:
                out_len[node.name] = shape[v.axis]
        fixed_pos = {k: v.fixed for k, v in self.vals.items() if v is not None and not v.is_fixed}
        return ModelGraph(self.gm, self.input_shape, self.layers, self.node_layer, self.merges, self.norms,
                          self.escapes, self.back, out_axis, out_len, self.links, fixed_pos, self.ignore, self.chain,
                          self.kept_whole)

    def kept_whole_reason(self, node: fx.Node) -> str | None:
        """Why the module called at ``node`` is kept whole (recorded for the pass's report), or None: named in
        ``ignore=``, or recurrent (its weights feed every unit back into itself over time)."""
        if node.op != "call_module":
            return None
        path, m = node.target, self.modules[node.target]
        if ignored(path, self.ignore):
            reason = "ignore="
        elif isinstance(m, nn.RNNBase):
            reason = "recurrent: its weights feed every unit back into itself over time"
        elif isinstance(m, ATTENTION_MODULES):
            reason = "attention: every output mixes all positions and heads"
        else:
            return None
        if any(True for _ in m.parameters()):
            self.kept_whole[path] = f"{type(m).__name__}, {reason}"
        return reason

    def call_module(self, node: fx.Node, ins: list[fx.Node]) -> None:
        path, m = node.target, self.modules[node.target]
        if self.kept_whole_reason(node) is not None:
            self.opaque(node)
            return
        if not ins:
            self.refuse(node, "it takes no tensor input")
        src = ins[0]
        val = self.vals[src.name]
        in_shape, out_shape = shape_of(src), shape_of(node)
        declared = declared_role(m)
        if declared in ("batchnorm", "layernorm", "identity") and not val.is_fixed:
            self.declared(node, path, m, src, val, in_shape, declared)
        elif isinstance(m, UNIT_LAYERS):
            self.layer(node, path, m, val, in_shape, out_shape)
        elif val.is_fixed and not isinstance(m, (_BatchNorm, nn.LayerNorm)):
            if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, CHANNELWISE_MODULES) and \
                    declared is None:
                self.refuse(node, f"it has parameters NNrelief does not know how to prune: {refusal(m)}")
            self.vals[node.name] = fixed_map()
            self.back[node.name] = lambda need, ins=ins: [(a, None) for a in ins]
        elif isinstance(m, ACTIVATION_MODULES):
            self.passthrough(node, src)
        elif isinstance(m, OFFSET_MODULES):
            self.offset_passthrough(node, src)
        elif isinstance(m, nn.ChannelShuffle):
            self.need_axis(node, val, 1, len(in_shape))
            g, c = m.groups, in_shape[1]
            self.permute_channels(node, src, val, torch.arange(c).view(g, c // g).t().reshape(-1))
        elif isinstance(m, POOL_MODULES + RESIZE_MODULES):
            if isinstance(m, nn.modules.padding._ConstantPadNd) and m.value != 0:
                self.refuse(node, f"it pads with {m.value}, so a removed unit would emit it at the borders")
            self.need_axis(node, val, 1, len(in_shape))
            self.passthrough(node, src)
        elif isinstance(m, _BatchNorm):
            self.batch_norm(node, path, m, src, val, in_shape)
        elif isinstance(m, (_InstanceNorm, nn.PReLU)):
            self.channelwise(node, path, m, src, val, in_shape)
        elif isinstance(m, nn.GroupNorm):
            self.group_norm(node, path, m, src, val, in_shape)
        elif isinstance(m, nn.LayerNorm):
            self.layer_norm(node, path, m, src, val, in_shape)
        elif isinstance(m, nn.Flatten):
            self.reshape(node, src, val, in_shape, out_shape)
        elif isinstance(m, OptionAShortcut):
            self.need_axis(node, val, 1, len(in_shape))
            self.pad_channels(node, src, val, m.pad, in_shape[1])
        else:
            self.refuse(node, refusal(m))

    def call_op(self, node: fx.Node, ins: list[fx.Node]) -> None:
        target = node.target
        moving = [a for a in ins if not self.vals[a.name].is_fixed]
        src = moving[0]
        val = self.vals[src.name]
        in_shape, out_shape = shape_of(src), shape_of(node)
        ndim = len(in_shape)
        elementwise = target in ACTIVATION_FUNCTIONS or (node.op == "call_method" and target in ACTIVATION_METHODS)
        offset = target in OFFSET_FUNCTIONS or (node.op == "call_method" and target in OFFSET_METHODS)
        if elementwise and len(moving) == 1 and len(ins) == 1:
            self.passthrough(node, src)
        elif offset and len(moving) == 1 and len(ins) == 1:
            self.offset_passthrough(node, src)
        elif target in POOL_FUNCTIONS or target in RESIZE_FUNCTIONS:
            self.need_axis(node, val, 1, ndim)
            self.passthrough(node, src)
        elif target in RESHAPE:
            self.reshape(node, src, val, in_shape, out_shape)
        elif target in TRANSPOSE:
            self.transpose(node, src, val, ndim)
        elif target in MEAN:
            self.reduce(node, src, val, ndim)
        elif target is operator.getitem:
            self.getitem(node, src, val, ndim)
        elif target in ADD or target is torch.cat:
            self.merge(node, ins, moving, out_shape)
        elif target in MUL:
            self.mul(node, ins, moving, src, val, out_shape)
        else:
            self.refuse(node, "it is not an operation NNrelief knows on a tensor carrying prunable units")
