"""Export a pruned model as a physically smaller one: removed units and channels sliced away.

Works on the traced dependency graph (:mod:`relief_nb.graph`), so chains, residual networks (identity, option-A
and projection shortcuts), concatenations and depthwise convs are exported by one implementation:

1. A *kept* position of every tensor's unit axis: a unit that is alive (an incoming connection or a bias
   survives) or a fixed signal (the input, an ignored layer's output, a constant). Positions joined by an
   operation must agree, so keeps are propagated to a fixed point: through pass-through ops both ways, across
   every branch of a residual addition (a channel of the sum stays while any branch keeps it; the other
   branches then keep it as a zero filter), through ``cat`` part by part, through flatten / reshape, and around
   a depthwise conv (its filter c reads channel c). LayerNorm statistics and grouped (not depthwise) convs keep
   their whole axis; ignored layers read their whole input; the output keeps every unit.
2. Weights, biases, BatchNorm statistics, shortcut masks and option-A shortcuts are sliced to the kept
   positions. A BatchNorm that reads a conv / Linear directly, and nothing else reads that layer, is folded
   into it (eval-mode statistics; exact); a BatchNorm anywhere else (after a ReLU, after a merge) is sliced,
   never folded. Optionally the Linear weights of 2-D inputs are stored as CSR tensors (:class:`SparseLinear`).
3. The result is checked against the masked model on a probe batch (``torch.allclose``); if they differ (a
   forward that hard-codes a channel count, say) :class:`ExportError` is raised instead of returning it.

A removed unit emits exactly zero (its BatchNorm channel is masked), so dropping it changes nothing.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.batches import (
    Batch,
    BatchSpec,
    as_spec,
    call_model,
    cast_floats,
    example_batch,
    input_shape_of,
    slice_batch,
)
from ..core.masks import effective, is_pruned, make_permanent, refresh_weights
from ..core.modes import eval_mode
from ..core.outputs import output_tensors
from ..core.precision import strict_fp32
from ..core.units import from_unit_major, in_units, is_conv, is_transposed, resize, unit_major
from ..models.zoo import OptionAShortcut
from .keep import kept_positions
from .structure import PruningGraph, trace_model
from .trace import ModelGraph

__all__ = ["ExportError", "SlicePlan", "SparseLinear", "export_pruned", "plan_slices", "saved_size_bytes"]


class ExportError(ValueError):
    """The model cannot be exported (never pruned, or a structure the exporter does not know)."""


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` held as a CSR sparse tensor (inference only)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        with warnings.catch_warnings():  # torch marks CSR support as beta
            warnings.simplefilter("ignore", UserWarning)
            self.register_buffer("weight", weight.to_sparse_csr())
        self.register_buffer("bias", bias.clone() if bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (self.weight @ x.T).T
        return y + self.bias if self.bias is not None else y


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode BatchNorm into the preceding layer (``weight`` unit-major): w' = w * g / s,
    b' = (b - mu) * g / s + beta."""
    gamma, beta = effective(bn, "weight"), effective(bn, "bias")
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return weight * scale.view(shape), (b - bn.running_mean) * scale + beta


class IndexShortcut(nn.Module):
    """An option-A shortcut after slicing: subsample by ``stride``, place input channel ``src[i]`` at output
    channel ``dst[i]`` of ``out_channels`` (zeros elsewhere)."""

    def __init__(self, stride: int, src: torch.Tensor, dst: torch.Tensor, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.stride, self.out_channels = stride, out_channels
        select = torch.zeros(out_channels, in_channels, 1, 1)
        select[dst, src] = 1
        # a 1x1 conv with a 0/1 matrix: exact, keeps channels-last, and 4x faster (forward and backward) on CPU than
        # out[:, dst] = x[:, src], whose index_put dominated a compact ResNet-20's training step
        self.register_buffer("select", select.to(memory_format=torch.channels_last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.conv2d(x, self.select.to(x.dtype))


@dataclass
class SlicePlan:
    """What the smaller model keeps of every sliced tensor (step 2 of the module docstring)."""

    layers: dict[str, tuple[torch.Tensor, torch.Tensor | None, int]]  # path -> out idx, in idx (None: whole), groups
    norms: dict[str, torch.Tensor]  # per-channel module (norm, PReLU) path -> kept channels
    gates: dict[tuple[str, str], torch.Tensor]  # (module path, mask buffer) -> kept channels
    scales: dict[str, torch.Tensor]  # per-channel scale parameter path (layer scale) -> kept channels
    shortcuts: dict[str, IndexShortcut]  # option-A shortcut path -> its re-indexed replacement
    folds: dict[str, str]  # layer path -> the BatchNorm export folds into it (read directly, by nothing else)


def plan_slices(model: nn.Module, graph: ModelGraph, multiple: int = 1) -> SlicePlan:
    """The :class:`SlicePlan` of a pruned ``model`` from its traced ``graph`` (kept positions: step 1, rounded up
    to ``multiple`` units per layer: see :func:`kept_positions`)."""
    keep = kept_positions(graph, multiple)
    modules = dict(model.named_modules())
    nodes = {n.name: n for n in graph.gm.graph.nodes}
    plan = SlicePlan({}, {}, {}, {}, {}, {})
    for node_name, layer_name in graph.node_layer.items():
        m = graph.layer(layer_name).module
        src = graph.links[node_name][1].name
        out_idx = keep[node_name].nonzero().flatten()
        in_idx = keep.get(src, torch.ones(in_units(m), dtype=torch.bool)).nonzero().flatten()
        if is_conv(m) and m.groups > 1:  # depthwise: filter c reads channel c; grouped: kept whole
            depthwise = m.groups == m.in_channels == m.out_channels
            plan.layers[layer_name] = (out_idx, None, len(out_idx) if depthwise else m.groups)
        else:
            plan.layers[layer_name] = (out_idx, in_idx, 1)
        bn = _foldable_bn(graph, nodes[node_name])
        if bn is not None:
            plan.folds[layer_name] = bn
    for node in graph.gm.graph.nodes:
        link = graph.links.get(node.name)
        if link is None or node.name not in keep:
            continue
        idx = keep[node.name].nonzero().flatten()
        if link[0] in ("bn", "channelwise", "gn"):
            plan.norms[node.target] = idx
        elif link[0] == "channel_scale":
            plan.scales[link[2]] = idx
        elif link[0] == "gate":
            gate = link[2]
            path = next(p for p, mod in modules.items() if mod is gate.module)
            plan.gates[(path, gate.buffer)] = idx
        elif link[0] == "pad":
            short = modules[node.target]
            if not isinstance(short, OptionAShortcut):
                raise ExportError(f"module {node.target}: only option-A shortcuts are re-indexed")
            target = keep[link[1].name].nonzero().flatten() + short.pad
            lands = keep[node.name][target]
            position = torch.cumsum(keep[node.name].long(), 0) - 1
            plan.shortcuts[node.target] = IndexShortcut(
                short.stride, lands.nonzero().flatten(), position[target[lands]], int(keep[link[1].name].sum()),
                int(keep[node.name].sum()))
    return plan


def take(t: torch.Tensor, out_idx: torch.Tensor, in_idx: torch.Tensor | None = None) -> torch.Tensor:
    """``t[out_idx][:, in_idx]`` (a copy) on ``t``'s device."""
    t = t[out_idx.to(t.device)]
    return (t[:, in_idx.to(t.device)] if in_idx is not None and t.ndim > 1 else t).clone()


def weight_index(m: nn.Module, out_idx: torch.Tensor, in_idx: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The :func:`take` index of a layer's weight in its own layout, from kept units and inputs (a transposed
    layer's weight stores its inputs first: :mod:`relief_nb.core.units`)."""
    if not is_transposed(m):
        return out_idx, in_idx
    if in_idx is None:
        raise ExportError("a transposed layer is sliced along both axes (a grouped one is not supported)")
    return in_idx, out_idx


def resize_channelwise(m: nn.Module, n: int) -> None:
    """Set a per-channel module's size attributes to ``n`` kept channels (a GroupNorm keeps its group size)."""
    if isinstance(m, nn.GroupNorm):
        m.num_groups, m.num_channels = n // (m.num_channels // m.num_groups), n
    elif isinstance(m, nn.PReLU):
        m.num_parameters = n
    else:
        m.num_features = n


@torch.no_grad()
@strict_fp32()  # traced, sliced and checked in full float32 (relief_nb.core.precision)
def export_pruned(model: nn.Module, input_shape: tuple[int, ...] | BatchSpec | Batch, sparse_linear: bool = False,
                  graph: PruningGraph | None = None, ignore: tuple[str, ...] = (),
                  probe: Batch | None = None) -> nn.Module:
    """A smaller dense copy of a pruned model (see the module docstring), checked against the masked model on
    ``probe`` (default: 8 seeded examples of ``input_shape``: normal floats, token ids below the smallest
    embedding table's size).

    ``input_shape`` is one example's shape, a :class:`~relief_nb.core.batches.BatchSpec`, or an example batch
    (a tensor, or a tuple / dict of tensors for a forward with several inputs), whose first 8 examples are then the
    default probe."""
    if not any(is_pruned(m) for m in model.modules()):
        raise ExportError("the model was never pruned (no weight masks): there is nothing to export")
    if _is_batch(input_shape):
        probe = probe if probe is not None else slice_batch(input_shape, 0, 8)
        input_shape = input_shape_of(input_shape)
    graph = graph or trace_model(model, input_shape, ignore)
    plan = plan_slices(model, graph)
    modules = dict(model.named_modules())
    exported = _strip_masks(model)
    for layer_name, (out_idx, in_idx, groups) in plan.layers.items():
        layer = graph.layer(layer_name)
        m = layer.module
        w, b = effective(m, "weight"), effective(m, "bias")
        if layer_name in plan.folds:
            w, b = _fold_bn(unit_major(m, w), b, modules[plan.folds[layer_name]])
            w = from_unit_major(m, w)
        b = take(b, out_idx) if b is not None else None
        if type(m) not in (nn.Conv2d, nn.Linear):  # any other layer, its class and settings kept, resized
            new = _resized_copy(exported.get_submodule(layer_name), take(w, *weight_index(m, out_idx, in_idx)), b,
                                len(out_idx), groups)
            _set_submodule(exported, layer_name, new)
            continue
        w = take(w, out_idx, in_idx)
        if isinstance(m, nn.Conv2d):
            new: nn.Module = nn.Conv2d(w.shape[1] * groups, len(out_idx), m.kernel_size, m.stride, m.padding,
                                       m.dilation, groups=groups, bias=b is not None).to(w.device, w.dtype)
            new.weight.copy_(w)
        elif sparse_linear and len(layer.in_shape) == 1:
            new = SparseLinear(w, b)
        else:
            new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None).to(w.device, w.dtype)
            new.weight.copy_(w)
        if b is not None and not isinstance(new, SparseLinear):
            new.bias.copy_(b)
        _set_submodule(exported, layer_name, new)
    folded = set(plan.folds.values())
    for path, idx in plan.norms.items():
        if path in folded:
            _set_submodule(exported, path, nn.Identity())
        else:
            norm = exported.get_submodule(path)
            slice_module(norm, dict.fromkeys(NORM_TENSORS, (idx, None)))
            resize_channelwise(norm, len(idx))
    for (path, buffer), idx in plan.gates.items():
        owner = exported.get_submodule(path)
        setattr(owner, buffer, take(getattr(owner, buffer), idx))
    for path, idx in plan.scales.items():
        owner_path, _, name = path.rpartition(".")
        slice_module(exported.get_submodule(owner_path), {name: (idx, None)})
    for path, shortcut in plan.shortcuts.items():
        _set_submodule(exported, path, shortcut.to(next(model.parameters()).device))
    exported.eval()
    _check_against(model, exported, input_shape, probe)
    return exported


def _resized_copy(m: nn.Module, w: torch.Tensor, b: torch.Tensor | None, out: int, groups: int) -> nn.Module:
    """``m`` (a plain copy) holding the sliced weight ``w`` (its own layout) and bias ``b``, its sizes updated."""
    grad = m.weight.requires_grad
    m.weight = nn.Parameter(w.contiguous(), requires_grad=grad)
    if b is not None:  # a folded BatchNorm gives a bias to a layer that had none
        m.bias = nn.Parameter(b, requires_grad=grad)
    resize(m, out, unit_major(m, w).shape[1], groups)
    return m


def _foldable_bn(graph: ModelGraph, node) -> str | None:
    """The BatchNorm to fold into the layer at ``node``: it must read the layer directly and be its only reader."""
    users = list(node.users)
    if len(users) != 1:
        return None
    user = users[0]
    link = graph.links.get(user.name)
    if link is None or link[0] != "bn" or link[1] is not node:
        return None
    return user.target


NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def slice_module(m: nn.Module, index: dict[str, tuple[torch.Tensor, torch.Tensor | None]]) -> list[str]:
    """Slice, in place, ``m``'s parameters and buffers whose base name is in ``index`` (prune's ``<name>_orig`` and
    ``<name>_mask`` too) to ``take(t, *index[base])``; returns the names sliced."""
    sliced = []
    for name, t in [*m._parameters.items(), *m._buffers.items()]:
        idx = index.get(name.removesuffix("_orig").removesuffix("_mask")) if t is not None else None
        if idx is None:
            continue
        part = take(t.detach(), *idx)
        if name in m._parameters:
            m._parameters[name] = nn.Parameter(part, requires_grad=t.requires_grad)
        else:
            m._buffers[name] = part
        sliced.append(name)
    return sliced


def _is_batch(x: object) -> bool:
    """An example batch rather than a shape or spec: a tensor, a dict, or a sequence holding tensors."""
    return isinstance(x, (torch.Tensor, dict)) or (isinstance(x, (tuple, list)) and any(
        isinstance(t, torch.Tensor) for t in x))


def _probe(model: nn.Module, input_shape: tuple[int, ...] | BatchSpec) -> Batch:
    """8 seeded examples: standard normal floats, integers below the smallest embedding table's size."""
    param = next(model.parameters())
    tables = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    return example_batch(as_spec(input_shape), 8, param.dtype, param.device, torch.Generator().manual_seed(0),
                         high=min(tables, default=2))


def _check_against(model: nn.Module, exported: nn.Module, input_shape: tuple[int, ...] | BatchSpec,
                   probe: Batch | None) -> None:
    """Raise :class:`ExportError` unless ``exported`` computes what the masked ``model`` computes on ``probe``.

    Compared in float64, on copies: slicing and BatchNorm folding are exact in real arithmetic, so the two agree to
    float64 rounding (~1e-12 relative at ResNet-50's depth), while float32 rounding grows with depth and scale (a
    correct ResNet-50 export differed by 7e-5, over any fixed float32 tolerance). rtol 1e-6 leaves room for
    summation order and none for a wrong slice. A model that cannot run in float64 is compared in its own precision
    with float32's tolerance (rtol 1e-4)."""
    probe = _probe(model, input_shape) if probe is None else probe
    try:
        with torch.no_grad():
            pair = (_strip_masks(model).double(), copy.deepcopy(exported).double())
        outputs = _outputs(*pair, cast_floats(probe, torch.float64))
        rtol = 1e-6
    except (RuntimeError, TypeError):  # a forward that casts to float32 itself, say
        outputs, rtol = None, 1e-4
    if outputs is None:
        outputs = _outputs(model, exported, probe)
    expected, got = outputs
    scale = max((float(e.abs().max()) for e in expected if e.numel()), default=1.0)
    same = len(got) == len(expected) and all(g.shape == e.shape for g, e in zip(got, expected))
    if not same or not all(torch.allclose(g, e, rtol=rtol, atol=rtol / 10 * max(scale, 1.0))
                           for g, e in zip(got, expected)):
        diff = max(float((g - e).abs().max()) for g, e in zip(got, expected)) if same else "shape"
        raise ExportError(f"the exported model differs from the masked model on a probe batch (max |diff| {diff}); "
                          "refusing to return it")


def _outputs(model: nn.Module, exported: nn.Module, probe: Batch) -> tuple[list, list]:
    """Every output tensor of both models on ``probe``, in eval mode (and strict float32 for float32 models)."""
    with eval_mode(model), eval_mode(exported), strict_fp32():
        expected = call_model(model, probe)
        try:
            got = call_model(exported, probe)
        except Exception as err:
            raise ExportError(f"the exported model fails on a probe batch ({type(err).__name__}: {err}); a forward "
                              "that hard-codes channel counts cannot be sliced") from err
    return list(output_tensors(expected)), list(output_tensors(got))  # a tensor, or a dict, tuple, ...


def _strip_masks(model: nn.Module) -> nn.Module:
    """A copy with plain parameters (prune hooks removed), so deepcopy yields an ordinary module tree."""
    with torch.no_grad():  # masked weights recomputed outside autograd: deepcopy needs leaf tensors
        refresh_weights(model)
    return make_permanent(copy.deepcopy(model))


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, module)


def saved_size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def save_exported(model: nn.Module, path: str | Path) -> Path:
    """Save the whole exported module (standard torch serialization); load with
    ``torch.load(path, weights_only=False)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model, path)
    return path

