"""Where a prunable layer keeps its units: the one place that knows each weighted-sum layer's weight layout.

A *unit* is an output feature (Linear, Embedding) or an output channel (a convolution of any dimension). Its
*incoming connections* are the weight entries that feed it: a row of a Linear weight, the kernels ``K[j, c]`` of a
convolution, the kernels ``K[c, j]`` of a transposed convolution (whose weight stores input channels first), the
column ``W[:, j]`` of an embedding table (a Linear over one-hot token ids). The pass, the masks' bookkeeping and
the exporter work on the *unit-major* view of a weight, ``(units, inputs, *kernel)``, which :func:`unit_major` gives
and :func:`from_unit_major` undoes, so one implementation serves every layout.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

__all__ = ["UNIT_LAYERS", "from_unit_major", "in_units", "is_conv", "is_transposed", "kernel_dims", "out_units",
           "resize", "unit_major"]

UNIT_LAYERS: tuple[type, ...] = (nn.Linear, _ConvNd, nn.Embedding)


def is_conv(m: nn.Module) -> bool:
    """A convolution of any dimension, transposed or not."""
    return isinstance(m, _ConvNd)


def is_transposed(m: nn.Module) -> bool:
    """A layer whose weight stores its inputs first: a transposed convolution, an embedding table."""
    return isinstance(m, (_ConvTransposeNd, nn.Embedding))


def kernel_dims(m: nn.Module) -> int:
    """Spatial dimensions of the layer's kernel (0 for Linear and Embedding)."""
    return len(m.kernel_size) if is_conv(m) else 0


def unit_major(m: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """The layer's weight (or a tensor shaped like it, e.g. a mask) as a ``(units, inputs, *kernel)`` view."""
    return t.transpose(0, 1) if is_transposed(m) else t


def from_unit_major(m: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`unit_major`: a unit-major tensor in the layer's own weight layout."""
    return t.transpose(0, 1) if is_transposed(m) else t


def out_units(m: nn.Module) -> int:
    if is_conv(m):
        return m.out_channels
    return m.embedding_dim if isinstance(m, nn.Embedding) else m.out_features


def in_units(m: nn.Module) -> int:
    """Input features / channels (the vocabulary of an embedding table)."""
    if is_conv(m):
        return m.in_channels
    return m.num_embeddings if isinstance(m, nn.Embedding) else m.in_features


def resize(m: nn.Module, out: int, inputs: int, groups: int = 1) -> None:
    """Set the layer's size attributes after its weight was sliced to ``out`` units and ``inputs`` inputs per group."""
    if is_conv(m):
        m.out_channels, m.groups, m.in_channels = out, groups, inputs * groups
    elif isinstance(m, nn.Embedding):
        m.embedding_dim, m.num_embeddings = out, inputs
    else:
        m.out_features, m.in_features = out, inputs
