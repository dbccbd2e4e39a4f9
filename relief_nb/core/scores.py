"""NNrelief importance scores of incoming connections, vectorized.

Linear layer, input ``x`` (N x m), weight ``W`` (out x m), bias ``b``; for neuron j and input i::

    s_ij = mean_n |W[j, i] * x[n, i]| = |W[j, i]| * mean_n |x[n, i]|,      s_bias_j = |b_j|

Conv layer: a connection is a whole kernel ``K_jc`` (input channel c -> filter j). ``(*)`` below is the
layer's own sliding window (same padding, stride, dilation), applied to one channel::

    paper  ("sample_l2"): s_jc = mean_n || |K_jc| (*) |x_nc| ||_F         s_bias_j = |b_j| sqrt(H_out W_out)
    code VGG/ResNet ("mean_l2"): s_jc = || |K_jc| (*) mean_n |x_nc| ||_F  s_bias_j = |b_j| sqrt(H_out W_out)
    code LeNet-5 ("mean_l1"): s_jc = sum_positions (|K_jc| (*) mean_n |x_nc|)   s_bias_j = |b_j| H_out W_out

The per-sample norms are computed in whichever of three exact forms is cheapest for the layer. The direct form
builds the maps ``|K_jc| (*) |x_nc|`` themselves, a tile of samples at a time, as one matrix product per input
channel: ``|K_c|`` (C_out x kh*kw) times the patches of ``|x_c|`` (kh*kw x samples*positions). The map is linear
in both the kernel and the input, so its squared norm is also a quadratic form, the other two forms:

* patch form: with ``P_nc`` the patches of ``|x_nc|`` (kh*kw rows, one column per output position),
  ``||map||^2 = |k_jc|^T G_nc |k_jc|`` with the Gram matrix ``G_nc = P_nc P_nc^T`` (kh*kw x kh*kw);
* pixel form: with ``A_jc`` the matrix of ``|K_jc| (*) .`` acting on one channel's H*W pixels,
  ``||map||^2 = |x_nc|^T (A_jc^T A_jc) |x_nc|`` (H*W x H*W), cheaper when a map has fewer pixels than a kernel
  has entries (the 2x2 maps at the end of VGG).

In pure torch the direct form wins when a filter bank is small next to the kernel's Gram matrix (LeNet-5's 5x5
kernels), the patch form on 3x3 kernels. For float32 on the CPU the patch form's Gram matrices come from a compiled
kernel (:mod:`relief_nb.core.native`): entry ``(a, b)`` of ``G_nc`` sums ``|x[u]| |x[u + lag]|`` over the pixels that
kernel offset ``a`` visits, with ``lag = b - a``, so each of the kernel's 13 (3x3) or 41 (5x5) lags is formed once
per pixel instead of once per pair of offsets and position; the patches are never built. The cost model then picks
the patch form for every paper layer except VGG's 2x2 maps (pixel form).

Any other convolution (1-D, 3-D, transposed, string padding, a padding mode other than zeros) and embedding tables
are scored in :mod:`relief_nb.core.general_scores`, by the same formulas written over the kernel's dimensions; the
2-D forms here are the fast special case of the same numbers (tests/test_layer_families.py).

Only the upper triangles of the symmetric matrices are used. All terms are products of absolute values, so the
quadratic forms are never negative, even after rounding. Samples are processed in chunks sized to stay in
cache; chunking is over samples only (no Python loop over neurons, filters or positions).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import native

__all__ = ["CONV_AGGREGATIONS", "CONV_FORMS", "ConvAggregation", "ConvScoreAccumulator", "DepthwiseScoreAccumulator",
           "LinearScoreAccumulator", "batch_abs_stats"]

ConvAggregation = Literal["sample_l2", "mean_l2", "mean_l1"]
CONV_AGGREGATIONS: tuple[str, ...] = ("sample_l2", "mean_l2", "mean_l1")
CONV_FORMS: tuple[str, ...] = ("auto", "direct", "patch", "pixel")

# Elements of intermediate tensors (float32: 8 MB of patches, 4 MB tiles of quadratic forms, 64 MB of Gram
# triangles, 2 MB tiles of maps): sized for the CPU's caches, measured fastest on the paper's layers (benchmarks/).
_PATCH_ELEMENTS = 1 << 21
_TILE_ELEMENTS = 1 << 20
_GRAM_ELEMENTS = 1 << 24
_MAP_ELEMENTS = 1 << 19  # direct form: maps per tile (2 MB)
# the direct form's single large matrix product runs ~1.5x more multiply-adds per second than the many small Gram
# products of the patch form (measured on LeNet-5, VGG and ResNet layers)
_DIRECT_SPEEDUP = 1.5


class LinearScoreAccumulator:
    """Accumulates ``sum_n |x_n|`` over chunks; :meth:`scores` gives ``(out, in [+1 bias])`` scores."""

    def __init__(self, layer: nn.Linear) -> None:
        self.layer = layer
        self.abs_sum: torch.Tensor | None = None
        self.count = 0

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """Add a chunk of layer inputs ``x`` (N, m); returns the chunk's per-input ``max |x|`` (m,), NaN where ``x``
        holds NaN or inf (the dead-unit rule needs it, and it comes with the pass over ``x``)."""
        s, peak = batch_abs_stats(x)
        self.abs_sum = s if self.abs_sum is None else self.abs_sum + s
        self.count += x.shape[0]
        return peak

    def scores(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``s_ij = |W_ji| mean_n |x_ni|``, with ``|b_j|`` appended as the last column if there is a bias."""
        mean_abs = self.abs_sum / self.count
        s = weight.abs() * mean_abs.unsqueeze(0)
        if bias is not None:
            s = torch.cat([s, bias.abs().unsqueeze(1)], dim=1)
        return s


class ConvScoreAccumulator:
    """Accumulates what a conv layer's kernel scores need, chunk by chunk (see the module docstring).

    ``form`` chooses how the per-sample norms of ``"sample_l2"`` are computed: ``"auto"`` (the cheapest exact
    form for the layer), ``"direct"``, ``"patch"`` or ``"pixel"``; all give the same numbers.
    """

    def __init__(self, layer: nn.Conv2d, aggregation: ConvAggregation = "sample_l2", form: str = "auto") -> None:
        if aggregation not in CONV_AGGREGATIONS:
            raise ValueError(f"unknown conv aggregation {aggregation!r}; choose one of {CONV_AGGREGATIONS}")
        if form not in CONV_FORMS:
            raise ValueError(f"unknown form {form!r}; choose one of {CONV_FORMS}")
        self.layer = layer
        self.aggregation = aggregation
        self.form = form
        self.sum: torch.Tensor | None = None  # sample_l2: sum_n of norms (C, out); mean modes: sum_n |x_n|
        self.count = 0
        self.positions = 0
        self._coeff: dict[str, torch.Tensor] = {}  # per form, from |weight|, cached for the pass

    # ------------------------------------------------------------------ accumulation
    def update(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Add a chunk of layer inputs ``x`` (N, C, H, W), in any memory format; returns the chunk's per-channel
        ``max |x|`` (C,), NaN if ``x`` holds NaN or inf (the dead-unit rule needs it, and it comes with the pass
        over ``x``).

        ``weight`` must be the same on every call (one accumulator serves one scoring pass).
        """
        self.count += x.shape[0]
        self.positions = _out_positions(self.layer, x.shape[-2:])
        compiled = None
        if self.aggregation == "sample_l2" and self.chosen_form(x.shape[-2:], native.accepts(x)) == "patch":
            compiled = native.patch_grams(x, self.layer, _out_hw(self.layer, x.shape[-2:]))
        if compiled is not None:
            gram, channel_max = compiled
            s = torch.zeros(x.shape[1], self.layer.out_channels, dtype=x.dtype)
            _add_root_quadratic_forms(s, self._coefficients(weight, "patch", x.shape[-2:]), gram)
        elif self.aggregation == "sample_l2":
            a = _abs_contiguous(x)
            channel_max = a.amax(dim=(0, 2, 3))
            s = self._sample_norms(a, weight)
        else:
            s, peak = batch_abs_stats(x)
            channel_max = peak.amax(dim=(1, 2))
        self.sum = s if self.sum is None else self.sum + s
        return channel_max

    def _coefficients(self, weight: torch.Tensor, form: str, hw: tuple[int, int] | torch.Size) -> torch.Tensor:
        """What ``form`` multiplies with the inputs, from ``|weight|``; computed once, as the weights are fixed
        during a scoring pass."""
        if form not in self._coeff:
            k = weight.abs()
            if form == "direct":
                self._coeff[form] = _by_input_channel(k).contiguous()
            elif form == "pixel":
                self._coeff[form] = self._pixel_coefficients(k, hw)
            else:
                self._coeff[form] = _pair_products(_by_input_channel(k), k.shape[2] * k.shape[3])
        return self._coeff[form]

    def _sample_norms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``(C, out)``: the chunk's per-sample map norms of ``x = |inputs|``, summed, in the pure-torch form
        chosen for the layer."""
        form = self.chosen_form(x.shape[-2:])
        coeff = self._coefficients(weight, form, x.shape[-2:])
        if form == "direct":
            return self._direct_norms(x, coeff)
        grams = self._pixel_grams if form == "pixel" else self._patch_grams
        s = torch.zeros(coeff.shape[:2], dtype=coeff.dtype, device=coeff.device)
        span = max(1, _GRAM_ELEMENTS // coeff[:, 0].numel())
        for start in range(0, x.shape[0], span):
            gram = torch.cat(list(grams(x[start:start + span])), dim=-1)  # (C, pairs, n)
            _add_root_quadratic_forms(s, coeff, gram)
        return s

    def chosen_form(self, hw: tuple[int, int] | torch.Size, compiled: bool = False) -> str:
        """``"direct"``, ``"patch"`` or ``"pixel"``: the cheapest exact form for inputs of size ``hw`` (or the
        forced one); ``compiled``: the compiled patch-Gram kernel applies (relief_nb.core.native)."""
        if self.form != "auto":
            return self.form
        m = self.layer
        kk, pixels = m.kernel_size[0] * m.kernel_size[1], hw[0] * hw[1]
        positions = _out_positions(m, hw)
        # multiply-adds per sample and input channel: the maps; or Gram matrices, then a quadratic form per filter.
        # The compiled kernel forms each lag's products once per pixel (kh (2 kw - 1) - (kw - 1) lags).
        kh, kw = m.kernel_size
        gram = (kh * (2 * kw - 1) - (kw - 1)) * pixels if compiled else kk * kk * positions
        costs = {
            "direct": m.out_channels * kk * positions / _DIRECT_SPEEDUP,
            "patch": gram + m.out_channels * kk * (kk + 1) // 2,
            "pixel": pixels * pixels + m.out_channels * pixels * (pixels + 1) // 2,
        }
        return min(costs, key=costs.__getitem__)

    def _patches(self, x: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
        """Fill ``buffer`` (..., kh, kw, H_out, W_out) with the patches of ``x`` (..., H, W), leading dims alike: for
        each kernel offset one strided copy over every position at once (F.unfold measured 3-5x slower here)."""
        m = self.layer
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = m.kernel_size, m.stride, m.dilation, m.padding
        ho, wo = buffer.shape[-2:]
        x = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        for a in range(kh):
            for b in range(kw):
                buffer[..., a, b, :, :].copy_(x[..., a * dh: a * dh + (ho - 1) * sh + 1: sh,
                                                 b * dw: b * dw + (wo - 1) * sw + 1: sw])
        return buffer

    def _direct_norms(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``(C, out)``: ``sum_n || |K_jc| (*) |x_nc| ||_F``, the maps built a tile of samples at a time."""
        n, cin = x.shape[:2]
        out, kk = k.shape[1:]
        (kh, kw), (ho, wo) = self.layer.kernel_size, _out_hw(self.layer, x.shape[-2:])
        positions = ho * wo
        step = max(1, _PATCH_ELEMENTS // (cin * kk * positions))  # samples per buffer of patches
        span = max(1, _MAP_ELEMENTS // (cin * out * positions))  # samples per tile of maps
        buffer = x.new_empty(cin, kh, kw, min(step, n), ho, wo)
        total = torch.zeros(cin, out, dtype=k.dtype, device=k.device)
        by_channel = x.transpose(0, 1)  # (C, n, H, W): one matrix product per input channel
        for start in range(0, n, step):
            tile = by_channel[:, start:start + step]
            p = buffer[:, :, :, : tile.shape[1]]
            self._patches(tile, p.permute(0, 3, 1, 2, 4, 5))  # written through a (C, n, kh, kw, ...) view
            p = p.reshape(cin, kk, -1)  # a view, except for a last, partial tile
            for s0 in range(0, tile.shape[1], span):
                s1 = min(s0 + span, tile.shape[1])
                maps = torch.bmm(k, p[:, :, s0 * positions: s1 * positions]).view(cin, out, s1 - s0, positions)
                total += torch.linalg.vector_norm(maps, dim=-1).sum(-1)
        return total

    def _patch_grams(self, x: torch.Tensor):
        """Yield ``(C, pairs, n)`` upper triangles of ``P_nc P_nc^T`` for chunks of samples."""
        m = self.layer
        n, cin = x.shape[:2]
        (kh, kw), (ho, wo) = m.kernel_size, _out_hw(m, x.shape[-2:])
        kk = kh * kw
        ia, ib = torch.triu_indices(kk, kk, device=x.device)
        step = max(1, _PATCH_ELEMENTS // (cin * kk * ho * wo))
        buffer = x.new_empty(min(step, n), cin, kh, kw, ho, wo)  # reused by every step
        for start in range(0, n, step):
            tile = x[start:start + step]
            p = self._patches(tile, buffer[: tile.shape[0]]).view(tile.shape[0], cin, kk, ho * wo)
            gram = torch.matmul(p, p.transpose(-1, -2))[:, :, ia, ib]  # (n, C, pairs)
            yield gram.permute(1, 2, 0)

    def _pixel_coefficients(self, k: torch.Tensor, hw: tuple[int, int] | torch.Size) -> torch.Tensor:
        """``(C, out, pairs)`` upper triangles of ``A_jc^T A_jc``, ``A_jc`` from the kernel's impulse responses."""
        m = self.layer
        out, cin = k.shape[:2]
        pixels = hw[0] * hw[1]
        impulses = torch.eye(pixels, dtype=k.dtype, device=k.device).view(pixels, 1, *hw)
        responses = F.conv2d(impulses, k.reshape(out * cin, 1, *k.shape[2:]), stride=m.stride,
                             padding=m.padding, dilation=m.dilation)  # (pixels, out*C, H', W'): columns of A
        a = responses.flatten(2).permute(1, 0, 2)  # (out*C, pixels, positions) = A^T
        ata = torch.bmm(a, a.transpose(1, 2))
        ia, ib, twice = _upper_triangle(pixels, ata)
        return (ata[:, ia, ib] * twice).view(out, cin, -1).transpose(0, 1).contiguous()

    def _pixel_grams(self, x: torch.Tensor):
        """Yield ``(C, pairs, n)`` upper triangles of ``x_nc x_nc^T`` (pixels x pixels)."""
        n, cin = x.shape[:2]
        pixels = x.shape[-2] * x.shape[-1]
        ia, ib = torch.triu_indices(pixels, pixels, device=x.device)
        step = max(1, _PATCH_ELEMENTS // (cin * len(ia)))
        flat = x.reshape(n, cin, pixels)
        for start in range(0, n, step):
            chunk = flat[start:start + step]
            yield (chunk[:, :, ia] * chunk[:, :, ib]).permute(1, 2, 0)

    # ------------------------------------------------------------------ scores
    def scores(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Kernel scores ``(out, C [+1 bias])`` for the aggregation chosen at construction."""
        m = self.layer
        out, cin = m.out_channels, m.in_channels
        if self.aggregation == "sample_l2":
            s = (self.sum / self.count).transpose(0, 1)
        else:
            mean_abs = (self.sum / self.count).unsqueeze(0)
            p = F.unfold(mean_abs, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
            k = weight.abs().reshape(out, cin, -1).transpose(0, 1)
            maps = torch.bmm(k, p.view(cin, -1, p.shape[-1]))  # (C, out, positions)
            agg = maps.norm(dim=-1) if self.aggregation == "mean_l2" else maps.sum(-1)
            s = agg.transpose(0, 1)
        if bias is not None:
            factor = self.positions if self.aggregation == "mean_l1" else self.positions ** 0.5
            s = torch.cat([s, bias.abs().unsqueeze(1) * factor], dim=1)
        return s


class DepthwiseScoreAccumulator:
    """Kernel scores of a conv whose filters each read one input channel (``groups == in_channels``: depthwise,
    with any channel multiplier). Filter j's only connection is its kernel on channel ``j // multiplier``, so
    every map ``|K_j| (*) |x_n,c(j)|`` is one output channel of the conv itself applied to ``|x|`` with ``|K|``:
    the same three aggregations as :class:`ConvScoreAccumulator`, in one grouped convolution per chunk."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d | nn.Conv3d, aggregation: ConvAggregation = "sample_l2") -> None:
        if aggregation not in CONV_AGGREGATIONS:
            raise ValueError(f"unknown conv aggregation {aggregation!r}; choose one of {CONV_AGGREGATIONS}")
        self.layer, self.aggregation = layer, aggregation
        self.sum: torch.Tensor | None = None  # sample_l2: sum_n of map norms (out,); mean modes: sum_n |x_n|
        self.count = 0
        self.positions = 0

    def _maps(self, a: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        m = self.layer
        a, padding = _padded(m, a)
        return _CONV[len(m.kernel_size)](a, weight.abs(), None, m.stride, padding, m.dilation, m.groups)

    def update(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Add a chunk of layer inputs; returns the chunk's per-channel ``max |x|``."""
        self.count += x.shape[0]
        a = x.abs()
        if self.aggregation == "sample_l2":
            maps = self._maps(a, weight)
            self.positions = maps[0, 0].numel()
            s = maps.flatten(2).norm(dim=2).sum(0)
        else:
            s = a.sum(0)
        self.sum = s if self.sum is None else self.sum + s
        return a.amax(dim=(0, *range(2, a.ndim)))

    def scores(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Kernel scores ``(out, 1 [+1 bias])``."""
        mean = self.sum / self.count
        if self.aggregation == "sample_l2":
            s = mean.unsqueeze(1)
        else:
            maps = self._maps(mean.unsqueeze(0), weight)[0].flatten(1)
            self.positions = maps.shape[1]
            s = (maps.norm(dim=1) if self.aggregation == "mean_l2" else maps.sum(1)).unsqueeze(1)
        if bias is not None:
            factor = self.positions if self.aggregation == "mean_l1" else self.positions ** 0.5
            s = torch.cat([s, bias.abs().unsqueeze(1) * factor], dim=1)
        return s


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _padded(m: nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...] | str]:
    """``a`` padded as the layer pads (reflect, replicate, circular) and the padding left for the conv itself."""
    if getattr(m, "padding_mode", "zeros") == "zeros":
        return a, m.padding
    return F.pad(a, m._reversed_padding_repeated_twice, mode=m.padding_mode), 0


def _abs_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``|x|`` written into a fresh contiguous tensor in one pass: reducing a channels-last activation (as
    training leaves it) over batch and positions is ~20x slower than reducing the contiguous copy."""
    return torch.abs(x, out=torch.empty(x.shape, dtype=x.dtype, device=x.device))


def batch_abs_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_n |x_n|, max_n |x_n|)``, each shaped like one sample; NaN or inf in ``x`` shows in both. By the
    compiled kernel in one pass over ``x`` where it applies, else from ``|x|`` in ``x``'s own memory order (a
    channels-last activation reduced as NCHW is ~2.5x slower)."""
    compiled = native.batch_abs_stats(x)
    if compiled is not None:
        return compiled
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        a = x.permute(0, 2, 3, 1).abs()
        return a.sum(0).permute(2, 0, 1), a.amax(0).permute(2, 0, 1)
    a = x.abs()
    return a.sum(0), a.amax(0)


def _add_root_quadratic_forms(total: torch.Tensor, coeff: torch.Tensor, gram: torch.Tensor) -> None:
    """``total[c, j] += sum_n sqrt(coeff[c, j] . gram[c, :, n])``: the per-sample map norms, summed.

    The (C, out, n) forms are reduced tile by tile (blocks of input channels x samples) so that each tile stays
    in cache between the matmul, the square root and the sum: 2x faster than whole-tensor steps on 512x512 layers.
    """
    c, out, _ = coeff.shape
    n = gram.shape[-1]
    samples = min(n, max(64, _TILE_ELEMENTS // (c * out)))
    channels = max(1, min(c, _TILE_ELEMENTS // (out * samples)))
    for c0 in range(0, c, channels):
        block, grams, acc = coeff[c0:c0 + channels], gram[c0:c0 + channels], total[c0:c0 + channels]
        for n0 in range(0, n, samples):
            acc += torch.bmm(block, grams[:, :, n0:n0 + samples]).sqrt_().sum(-1)


def _upper_triangle(size: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices ``(a, b)``, ``a <= b``, of a symmetric ``size x size`` matrix, and the weights (1 on the diagonal,
    2 off it) that make a sum over the upper triangle equal the sum over the whole matrix."""
    ia, ib = torch.triu_indices(size, size, device=like.device)
    return ia, ib, torch.where(ia == ib, 1.0, 2.0).to(like.dtype)


def _by_input_channel(k: torch.Tensor) -> torch.Tensor:
    """Kernels ``(out, C, kh, kw)`` as ``(C, out, kh*kw)``: one matrix of flattened kernels per input channel."""
    return k.reshape(k.shape[0], k.shape[1], -1).transpose(0, 1)


def _pair_products(v: torch.Tensor, size: int) -> torch.Tensor:
    """``v[..., a] * v[..., b]`` over the upper triangle ``a <= b`` of ``size``, off-diagonal terms doubled."""
    ia, ib, twice = _upper_triangle(size, v)
    return v[..., ia] * v[..., ib] * twice


def _out_hw(m: nn.Conv2d, hw: tuple[int, int] | torch.Size) -> tuple[int, int]:
    out = []
    for size, k, s, p, d in zip(hw, m.kernel_size, m.stride, m.padding, m.dilation):
        out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
    return out[0], out[1]


def _out_positions(m: nn.Conv2d, hw: tuple[int, int] | torch.Size) -> int:
    ho, wo = _out_hw(m, hw)
    return ho * wo
