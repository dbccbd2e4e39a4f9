"""Export a pruned model as a physically smaller one: dead units and channels sliced away.

For a chain of Conv2d / Linear layers (LeNets, VGGs) the exporter keeps, per layer, the units that are alive
(an incoming connection or a bias survives) *and* read downstream, slices weights, biases and BatchNorm
accordingly, folds each BatchNorm into the conv before it (eval-mode statistics; exact), and rebuilds the
same ``nn.Sequential`` structure. Optionally the remaining Linear weights are stored as CSR sparse tensors
(:class:`SparseLinear`). The result is a plain ``nn.Module`` saved with ``torch.save``; its outputs equal the
masked model's (``torch.allclose``) in eval mode.

A removed unit whose BatchNorm was masked emits exactly zero, so dropping it changes nothing. ResNets are not
exported (their residual channels are shared across blocks): that raises a clear error.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from .models import ResidualBlock
from .relief import alive_units, effective, reads_inputs
from .structure import LayerNode, PruningGraph, trace_model

__all__ = ["ExportError", "SparseLinear", "export_pruned", "saved_size_bytes"]


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


def _fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d | nn.BatchNorm1d
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold eval-mode BatchNorm into the preceding layer: w' = w * g / s, b' = (b - mu) * g / s + beta."""
    gamma, beta = effective(bn, "weight"), effective(bn, "bias")
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return weight * scale.view(shape), (b - bn.running_mean) * scale + beta


@torch.no_grad()
def export_pruned(model: nn.Module, input_shape: tuple[int, ...], sparse_linear: bool = False,
                  graph: PruningGraph | None = None) -> nn.Module:
    """A smaller dense copy of a pruned chain model (see the module docstring)."""
    block = next((name for name, m in model.named_modules() if isinstance(m, ResidualBlock)), None)
    if block is not None:
        raise ExportError(f"module {block} (ResidualBlock) cannot be exported: residual channels are shared "
                          "between blocks; the exporter handles chains of Conv2d / Linear layers (LeNet, VGG)")
    if not any(hasattr(m, "weight_mask") for m in model.modules()):
        raise ExportError("the model was never pruned (no weight masks): there is nothing to export")
    graph = graph or trace_model(model, input_shape)
    layers: list[LayerNode] = graph.layers()
    # a unit stays if it is alive and the next layer reads it; the output layer keeps every unit
    keep_out = []
    for i, layer in enumerate(layers):
        if i + 1 == len(layers):
            keep_out.append(torch.ones(layer.out_units, dtype=torch.bool))
        else:
            keep_out.append((alive_units(layer) & reads_inputs(layers[i + 1])).cpu())
    replacements: dict[str, nn.Module] = {}
    keep_in = torch.ones(layers[0].in_units, dtype=torch.bool)
    for layer, out_keep in zip(layers, keep_out):
        m = layer.module
        w = effective(m, "weight")
        b = effective(m, "bias")
        if layer.bn is not None:
            w, b = _fold_bn(w, b, layer.bn)
        in_idx = keep_in.nonzero().flatten()
        if isinstance(m, nn.Linear) and layer.features_per_channel > 1:
            f = layer.features_per_channel
            in_idx = (in_idx.view(-1, 1) * f + torch.arange(f)).flatten()
        out_idx = out_keep.nonzero().flatten()
        w = w[out_idx][:, in_idx].clone()
        b = b[out_idx].clone() if b is not None else None
        if isinstance(m, nn.Conv2d):
            new: nn.Module = nn.Conv2d(len(in_idx), len(out_idx), m.kernel_size, m.stride, m.padding, m.dilation,
                                       bias=b is not None)
            new.weight.copy_(w)
        elif sparse_linear:
            new = SparseLinear(w, b)
        else:
            new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
            new.weight.copy_(w)
        if b is not None and not isinstance(new, SparseLinear):
            new.bias.copy_(b)
        replacements[layer.name] = new
        if layer.bn is not None:
            replacements[layer.bn_name] = nn.Identity()
        keep_in = out_keep
    exported = copy.deepcopy(_strip_masks(model))
    for name, module in replacements.items():
        _set_submodule(exported, name, module)
    return exported.eval()


def _strip_masks(model: nn.Module) -> nn.Module:
    """A copy with plain parameters (prune hooks removed), so deepcopy yields an ordinary module tree."""
    from torch.nn.utils import prune

    clone = copy.deepcopy(model)
    for module in clone.modules():
        for name in [n[: -len("_mask")] for n, _ in module.named_buffers(recurse=False) if n.endswith("_mask")]:
            if hasattr(module, f"{name}_orig"):
                prune.remove(module, name)
    return clone


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

