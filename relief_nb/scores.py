"""NNrelief importance scores of incoming connections, vectorized.

Linear layer, input ``x`` (N x m), weight ``W`` (out x m), bias ``b``; for neuron j and input i::

    s_ij = mean_n |W[j, i] * x[n, i]| = |W[j, i]| * mean_n |x[n, i]|,      s_bias_j = |b_j|

Conv layer: a connection is a whole kernel ``K_jc`` (input channel c -> filter j). ``(*)`` below is the
layer's own sliding window (same padding, stride, dilation), applied to one channel::

    paper  ("sample_l2"): s_jc = mean_n || |K_jc| (*) |x_nc| ||_F         s_bias_j = |b_j| sqrt(H_out W_out)
    code VGG/ResNet ("mean_l2"): s_jc = || |K_jc| (*) mean_n |x_nc| ||_F  s_bias_j = |b_j| sqrt(H_out W_out)
    code LeNet-5 ("mean_l1"): s_jc = sum_positions (|K_jc| (*) mean_n |x_nc|)   s_bias_j = |b_j| H_out W_out

With ``P_nc`` the unfolded patches of ``|x_nc|`` (kh*kw rows, one column per output position), the map is
``|k_jc|^T P_nc`` and its squared norm is the quadratic form ``|k_jc|^T G_nc |k_jc|`` with the Gram matrix
``G_nc = P_nc P_nc^T``. Per layer, the cheaper of the two forms (explicit maps via batched matmul, or Gram
matrices) is chosen from their operation counts; both are exact. Scores are accumulated over chunks of
samples so that the scoring batch can be large.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CONV_AGGREGATIONS", "ConvScoreAccumulator", "LinearScoreAccumulator", "ConvAggregation"]

ConvAggregation = Literal["sample_l2", "mean_l2", "mean_l1"]
CONV_AGGREGATIONS: tuple[str, ...] = ("sample_l2", "mean_l2", "mean_l1")

# Upper bound on elements of one intermediate tensor while scoring (~256 MB in float32).
_MAX_ELEMENTS = 1 << 26


class LinearScoreAccumulator:
    """Accumulates ``sum_n |x_n|`` over chunks; :meth:`scores` gives ``(out, in [+1 bias])`` scores."""

    def __init__(self, layer: nn.Linear) -> None:
        self.layer = layer
        self.abs_sum: torch.Tensor | None = None
        self.count = 0

    def update(self, x: torch.Tensor, absolute: bool = False) -> None:
        """Add a chunk of layer inputs ``x`` (N, m); ``absolute=True`` says ``x`` is already ``|x|``."""
        s = (x if absolute else x.abs()).sum(0)
        self.abs_sum = s if self.abs_sum is None else self.abs_sum + s
        self.count += x.shape[0]

    def scores(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``s_ij = |W_ji| mean_n |x_ni|``, with ``|b_j|`` appended as the last column if there is a bias."""
        mean_abs = self.abs_sum / self.count
        s = weight.abs() * mean_abs.unsqueeze(0)
        if bias is not None:
            s = torch.cat([s, bias.abs().unsqueeze(1)], dim=1)
        return s


class ConvScoreAccumulator:
    """Accumulates what a conv layer's kernel scores need, chunk by chunk (see the module docstring)."""

    def __init__(self, layer: nn.Conv2d, aggregation: ConvAggregation = "sample_l2", form: str = "auto") -> None:
        if aggregation not in CONV_AGGREGATIONS:
            raise ValueError(f"unknown conv aggregation {aggregation!r}; choose one of {CONV_AGGREGATIONS}")
        if form not in ("auto", "gram", "maps"):
            raise ValueError(f"form must be 'auto', 'gram' or 'maps', got {form!r}")
        self.form = form  # how the per-sample norms are computed; "auto" picks the cheaper exact form
        self.layer = layer
        self.aggregation = aggregation
        self.sum: torch.Tensor | None = None  # per-sample: sum_n of norms (C, out); mean modes: sum_n |x_n|
        self.count = 0
        self.positions = 0

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        """Patches of ``x`` (n, C, H, W) as (n, C, kh*kw, L)."""
        m = self.layer
        p = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
        n, _, positions = p.shape
        self.positions = positions
        return p.view(n, m.in_channels, -1, positions)

    def update(self, x: torch.Tensor, weight: torch.Tensor, absolute: bool = False) -> None:
        """Add a chunk of layer inputs ``x`` (N, C, H, W); ``absolute=True`` says ``x`` is already ``|x|``."""
        x = x if absolute else x.abs()
        self.count += x.shape[0]
        if self.aggregation != "sample_l2":
            s = x.sum(0)
            self.sum = s if self.sum is None else self.sum + s
            return
        m = self.layer
        out, cin = m.out_channels, m.in_channels
        kk = weight[0, 0].numel()
        k = weight.abs().reshape(out, cin, kk).transpose(0, 1)  # (C, out, kk)
        h_out, w_out = _out_hw(m, x.shape[-2:])
        positions = h_out * w_out
        pairs = kk * (kk + 1) // 2
        # operation counts per sample and input channel; the explicit maps' matmul has a tiny inner
        # dimension (kk) and a large output, so it is weighted as twice as expensive per operation
        gram_cost = kk * kk * positions + 2 * out * pairs
        map_cost = 2 * (2 * kk + 3) * out * positions
        use_maps = map_cost < gram_cost if self.form == "auto" else self.form == "maps"
        per_sample = cin * (kk * positions + (out * positions if use_maps else kk * kk + out))
        chunk = max(1, _MAX_ELEMENTS // max(per_sample, 1))
        if not use_maps:
            # symmetric Gram matrices: only the kk(kk+1)/2 upper entries, off-diagonal ones counted twice
            ia, ib = torch.triu_indices(kk, kk, device=x.device)
            twice = torch.where(ia == ib, 1.0, 2.0).to(k.dtype)
            outer = k[:, :, ia] * k[:, :, ib] * twice  # (C, out, pairs)
        for start in range(0, x.shape[0], chunk):
            p = self._unfold(x[start:start + chunk])  # (n, C, kk, L)
            n = p.shape[0]
            if use_maps:
                # maps (C, out, n*L) = |K_c| @ P_c, then the L2 norm over positions per sample
                maps = torch.bmm(k, p.permute(1, 2, 0, 3).reshape(cin, kk, n * positions))
                norms = maps.view(cin, out, n, positions).pow_(2).sum(-1).sqrt_()
            else:
                gram = torch.matmul(p, p.transpose(-1, -2))[:, :, ia, ib]  # (n, C, pairs)
                quad = torch.bmm(outer, gram.permute(1, 2, 0))  # (C, out, n) = |k|^T G |k|
                norms = quad.clamp_(min=0).sqrt_()
            s = norms.sum(-1)
            self.sum = s if self.sum is None else self.sum + s

    def scores(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Kernel scores ``(out, C [+1 bias])`` for the aggregation chosen at construction."""
        m = self.layer
        out, cin = m.out_channels, m.in_channels
        if self.aggregation == "sample_l2":
            s = (self.sum / self.count).transpose(0, 1)
            positions = self.positions
        else:
            mean_abs = (self.sum / self.count).unsqueeze(0)
            p = self._unfold(mean_abs)[0]  # (C, kk, L)
            positions = p.shape[-1]
            k = weight.abs().reshape(out, cin, -1).transpose(0, 1)
            maps = torch.bmm(k, p)  # (C, out, L)
            agg = maps.norm(dim=-1) if self.aggregation == "mean_l2" else maps.sum(-1)
            s = agg.transpose(0, 1)
        if bias is not None:
            factor = positions if self.aggregation == "mean_l1" else positions ** 0.5
            s = torch.cat([s, bias.abs().unsqueeze(1) * factor], dim=1)
        return s


def _out_hw(m: nn.Conv2d, hw: torch.Size) -> tuple[int, int]:
    out = []
    for size, k, s, p, d in zip(hw, m.kernel_size, m.stride, m.padding, m.dilation):
        out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
    return out[0], out[1]
