"""Scores of every weighted-sum layer other than Linear and the plain Conv2d of :mod:`relief_nb.core.scores`:
convolutions of any dimension, transposed or not, with any padding (:class:`MapScoreAccumulator`), and embedding
tables read by token ids (:class:`EmbeddingScoreAccumulator`); :func:`scorer_for` picks a layer's accumulator.

The formulas are the paper's (see :mod:`relief_nb.core.scores`), written once over the kernel's dimensions: the
maps ``|K_jc| (*) |x_nc|`` of every (input channel, filter) pair are one convolution of ``|x|`` with ``|K|``
grouped by input channel, in the layer's own functional form. On a Conv2d it gives the numbers of the three 2-D
forms (tests/test_layer_families.py), which stay the fast path.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from .scores import (
    _CONV,
    _CONV_T,
    _MAP_ELEMENTS,
    CONV_AGGREGATIONS,
    ConvAggregation,
    ConvScoreAccumulator,
    DepthwiseScoreAccumulator,
    LinearScoreAccumulator,
    _padded,
)

__all__ = ["EmbeddingScoreAccumulator", "MapScoreAccumulator", "scorer_for"]


class MapScoreAccumulator:
    """Kernel scores of any convolution (1-, 2- or 3-D, transposed or not), written once over the kernel's
    dimensions: the maps ``|K_jc| (*) |x_nc|`` of every (input channel c, filter j) pair are one convolution of
    ``|x|`` with ``|K|`` grouped by input channel, in the layer's own functional form (module docstring)::

        sample_l2: s_jc = mean_n || |K_jc| (*) |x_nc| ||_F        s_bias_j = |b_j| sqrt(P)
        mean_l2:   s_jc = || |K_jc| (*) mean_n |x_nc| ||_F        s_bias_j = |b_j| sqrt(P)
        mean_l1:   s_jc = sum_positions |K_jc| (*) mean_n |x_nc|  s_bias_j = |b_j| P

    with ``P`` the number of output positions. ``weight`` is given dense (a grouped conv's as the equivalent dense
    one), in the layer's own layout.
    """

    def __init__(self, layer: nn.Module, aggregation: ConvAggregation = "sample_l2") -> None:
        if aggregation not in CONV_AGGREGATIONS:
            raise ValueError(f"unknown conv aggregation {aggregation!r}; choose one of {CONV_AGGREGATIONS}")
        self.layer, self.aggregation = layer, aggregation
        self.transposed = isinstance(layer, _ConvTransposeNd)
        self.sum: torch.Tensor | None = None  # sample_l2: sum_n of map norms (C, out); mean modes: sum_n |x_n|
        self.count = 0
        self.positions = 0

    def _maps(self, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``(n, C, out, positions)``: the map of every (input channel, filter) pair for the samples ``a = |x|``."""
        m, k = self.layer, weight.abs()
        n, cin = a.shape[:2]
        d = len(m.kernel_size)
        if self.transposed:  # weight (C, out, *kernel): groups = C makes output channel c*out + j = K_cj applied to x_c
            y = _CONV_T[d](a, k, None, m.stride, m.padding, m.output_padding, cin, m.dilation)
        else:  # weight (out, C, *kernel) -> (C*out, 1, *kernel): output channel c*out + j = K_jc (*) x_c
            a, padding = _padded(m, a)
            k = k.transpose(0, 1).reshape(-1, 1, *k.shape[2:])
            y = _CONV[d](a, k, None, m.stride, padding, m.dilation, cin)
        return y.view(n, cin, -1, y[0, 0].numel())

    def update(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Add a chunk of layer inputs ``x`` (N, C, *spatial); returns the chunk's per-channel ``max |x|``."""
        self.count += x.shape[0]
        a = x.abs()
        if self.aggregation == "sample_l2":
            units = weight.shape[1] if self.transposed else weight.shape[0]
            per_sample = a.shape[1] * units * _out_size(self.layer, a)  # map entries of one sample
            span = max(1, _MAP_ELEMENTS * 8 // per_sample)  # samples per tile of maps (16 MB)
            s = None
            for start in range(0, a.shape[0], span):
                maps = self._maps(a[start:start + span], weight)
                self.positions = maps.shape[-1]
                part = torch.linalg.vector_norm(maps, dim=-1).sum(0)
                s = part if s is None else s + part
        else:
            s = a.sum(0)
        self.sum = s if self.sum is None else self.sum + s
        return a.amax(dim=(0, *range(2, a.ndim)))

    def scores(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Kernel scores ``(out, C [+1 bias])``."""
        if self.aggregation == "sample_l2":
            s = (self.sum / self.count).transpose(0, 1)
        else:
            maps = self._maps((self.sum / self.count).unsqueeze(0), weight)[0]
            self.positions = maps.shape[-1]
            s = (maps.norm(dim=-1) if self.aggregation == "mean_l2" else maps.sum(-1)).transpose(0, 1)
        if bias is not None:
            factor = self.positions if self.aggregation == "mean_l1" else self.positions ** 0.5
            s = torch.cat([s, bias.abs().unsqueeze(1) * factor], dim=1)
        return s


class EmbeddingScoreAccumulator:
    """An embedding table is a Linear layer over one-hot token ids: output feature ``d`` reads table entry
    ``W[v, d]`` wherever token ``v`` appears, so with ``f_v`` the frequency of token ``v`` in the batch (over
    samples and positions)::

        s_dv = |W[v, d]| * f_v        (the Linear score |W_ji| mean_n |x_ni| with x one-hot; no bias)
    """

    def __init__(self, layer: nn.Embedding) -> None:
        self.layer = layer
        self.counts = torch.zeros(layer.num_embeddings, dtype=torch.float64)
        self.count = 0

    def update(self, ids: torch.Tensor) -> torch.Tensor:
        """Add a chunk of token ids (any shape); returns per token ``1`` if it occurs, else ``0`` (its max |x|)."""
        hits = torch.bincount(ids.reshape(-1).cpu(), minlength=self.layer.num_embeddings).double()
        self.counts += hits
        self.count += ids.numel()
        return (hits > 0).to(torch.float32)

    def scores(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``(embedding_dim, num_embeddings)`` scores."""
        freq = (self.counts / max(self.count, 1)).to(weight.device, weight.dtype)
        return weight.abs().transpose(0, 1) * freq.unsqueeze(0)


def scorer_for(layer: nn.Module, aggregation: ConvAggregation = "sample_l2"):
    """The accumulator that scores ``layer``: the fast 2-D forms for a plain Conv2d with numeric zero padding, the
    depthwise one for a depthwise conv, the general map form for any other convolution."""
    if isinstance(layer, nn.Embedding):
        return EmbeddingScoreAccumulator(layer)
    if not isinstance(layer, _ConvNd):
        return LinearScoreAccumulator(layer)
    plain = not isinstance(layer, _ConvTransposeNd) and layer.padding_mode == "zeros" and \
        not isinstance(layer.padding, str)
    if plain and layer.groups > 1 and layer.groups == layer.in_channels:
        return DepthwiseScoreAccumulator(layer, aggregation)
    if plain and len(layer.kernel_size) == 2:
        return ConvScoreAccumulator(layer, aggregation)
    return MapScoreAccumulator(layer, aggregation)


def _out_size(m: nn.Module, a: torch.Tensor) -> int:
    """Output positions per channel of the layer on ``a`` (an upper bound is enough: it sizes tiles)."""
    size = 1
    for i, n in enumerate(a.shape[2:]):
        k, s, d = m.kernel_size[i], m.stride[i], m.dilation[i]
        if isinstance(m, _ConvTransposeNd):
            size *= (n - 1) * s + d * (k - 1) + 1 + m.output_padding[i]
        else:
            size *= n + d * (k - 1) + 1  # at most (string or any padding)
    return size

