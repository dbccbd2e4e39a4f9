"""The compiled patch-Gram kernel (relief_nb/csrc/patch_gram.c) against an F.unfold reference, its fallbacks,
and the scores it feeds."""

import itertools
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relief_nb.core import native as native
from relief_nb.core.scores import ConvScoreAccumulator, _out_hw, batch_abs_stats
from relief_nb.models.zoo import create_model, input_shape_of
from relief_nb.pruning.relief import ReliefConfig, score_layers

HAS_COMPILER = bool(shutil.which("cc") or shutil.which("gcc"))
needs_kernel = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the pure-torch forms are used")


def reference_grams(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """(C, pairs, N) upper triangles of P P^T, P the unfolded patches of |x|, in float64."""
    kh, kw = conv.kernel_size
    p = F.unfold(x.abs().double(), conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                 stride=conv.stride)
    p = p.view(x.shape[0], x.shape[1], kh * kw, -1)
    ia, ib = torch.triu_indices(kh * kw, kh * kw)
    return (p @ p.transpose(-1, -2))[:, :, ia, ib].permute(1, 2, 0)


def layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    wide = torch.zeros(x.shape[0], x.shape[1], x.shape[2], x.shape[3] + 2)
    wide[..., 1:-1] = x
    return {"nchw": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
            "strided view": wide[..., 1:-1]}


@needs_kernel
def test_kernel_builds_where_a_compiler_exists():
    assert native.available(), "gcc is on PATH, so the kernel must build (see the warning for the compiler output)"


@needs_kernel
def test_grams_match_unfold_reference_on_every_window():
    """Kernel sizes, strides, paddings, dilations, channel counts on both sides of the SIMD-lane threshold (8),
    images smaller than the kernel's reach, and three memory layouts."""
    torch.manual_seed(0)
    cases = itertools.product([(1, 1), (3, 3), (5, 5), (2, 4), (3, 5)], [1, 2, (1, 3)], [0, 1, (2, 1)], [1, 2],
                              [(7, 9), (12, 12), (1, 5)], [1, 3, 8, 20])
    checked = 0
    for kernel, stride, padding, dilation, hw, channels in cases:
        conv = nn.Conv2d(channels, 2, kernel, stride, padding, dilation)
        out_hw = _out_hw(conv, hw)
        if min(out_hw) < 1:
            continue
        x = torch.randn(3, channels, *hw)
        expected = reference_grams(x, conv)
        for name, view in layouts(x).items():
            gram, cmax = native.patch_grams(view, conv, out_hw)
            scale = expected.abs().max().clamp_min(1e-30)
            err = float((gram.double() - expected).abs().max() / scale)
            assert err < 1e-5, (kernel, stride, padding, dilation, hw, channels, name, err)
            torch.testing.assert_close(cmax, x.abs().amax(dim=(0, 2, 3)), rtol=0, atol=0)
        checked += 1
    assert checked > 800  # 900 valid windows


@needs_kernel
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_channel_max_flags_nan_and_inf_in_their_channel(bad):
    conv = nn.Conv2d(10, 4, 3, padding=1)
    x = torch.rand(4, 10, 6, 6)
    x[2, 7, 3, 1] = bad
    for view in layouts(x).values():
        _, cmax = native.patch_grams(view, conv, (6, 6))
        assert torch.isnan(cmax[7])
        assert torch.isfinite(torch.cat([cmax[:7], cmax[8:]])).all()


def test_kernel_declines_what_it_does_not_handle():
    conv = nn.Conv2d(2, 3, 3)
    assert native.patch_grams(torch.rand(2, 2, 5, 5, dtype=torch.float64), conv, (3, 3)) is None


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("RELIEF_NB_NATIVE", "0")
    assert not native.available()
    assert native.patch_grams(torch.rand(2, 2, 5, 5), nn.Conv2d(2, 3, 3), (3, 3)) is None


def test_missing_compiler_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("RELIEF_NB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="pure-torch"):
        assert not native.available()
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.rand(5, 3, 6, 6)
    acc = ConvScoreAccumulator(conv, "sample_l2")
    acc.update(x, conv.weight)  # the pure-torch forms take over
    assert acc.scores(conv.weight, conv.bias).shape == (4, 4)


@needs_kernel
def test_build_goes_to_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_state", {})
    monkeypatch.setenv("RELIEF_NB_CACHE", str(tmp_path))
    assert native.available()
    built = [p.name for p in tmp_path.iterdir()]
    assert len(built) == 1 and built[0].startswith("patch_gram-") and built[0].endswith(".so")  # no temp file left


@needs_kernel
@pytest.mark.parametrize("name", ["lenet5", "resnet20", "vgg-like"])
def test_scores_with_and_without_kernel_agree(monkeypatch, name):
    """Whole-model scores in float32: compiled patch form vs the pure-torch forms (which the float64 loop tests
    check), with channels-last activations as in experiments."""
    torch.manual_seed(0)
    model = create_model(name, seed=0).eval().to(memory_format=torch.channels_last)
    x = torch.rand(6, *input_shape_of(name)).contiguous(memory_format=torch.channels_last)
    with_kernel = score_layers(model, x, ReliefConfig())
    monkeypatch.setenv("RELIEF_NB_NATIVE", "0")
    without = score_layers(model, x, ReliefConfig())
    for layer, s in with_kernel.items():
        torch.testing.assert_close(s, without[layer], rtol=2e-5, atol=1e-6, msg=layer)


@pytest.mark.parametrize("kernel", ["1", "0"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided view"])
@pytest.mark.parametrize("shape", [(5, 6, 4, 3), (3, 1, 5, 7), (2, 70, 1, 1), (4, 16, 32, 33)])
def test_batch_abs_stats_with_and_without_kernel(monkeypatch, kernel, layout, shape):
    monkeypatch.setenv("RELIEF_NB_NATIVE", kernel)
    x = layouts(torch.randn(*shape))[layout]
    total, peak = batch_abs_stats(x)
    torch.testing.assert_close(total, x.abs().sum(0))
    torch.testing.assert_close(peak, x.abs().amax(0), rtol=0, atol=0)
    if kernel == "1" and HAS_COMPILER and layout != "strided view":
        assert native.batch_abs_stats(x) is not None
        assert native.batch_abs_stats(x.flatten(1)) is not None  # a Linear layer's input


@needs_kernel
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_batch_abs_stats_flags_nan_and_inf(bad):
    x = torch.rand(6, 3000)  # wider than one block of the kernel
    x[4, 2500] = bad
    total, peak = native.batch_abs_stats(x)
    assert not torch.isfinite(total[2500]) and torch.isnan(peak[2500])
    assert torch.isfinite(peak[:2500]).all() and torch.isfinite(peak[2501:]).all()
