"""Vectorized scores against straightforward loops (float64, tight tolerance)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relief_nb.core.scores import ConvScoreAccumulator, LinearScoreAccumulator


def loop_linear(x, w, b):
    out, m = w.shape
    s = torch.zeros(out, m + (b is not None), dtype=x.dtype)
    for j in range(out):
        for i in range(m):
            s[j, i] = (w[j, i] * x[:, i]).abs().mean()
        if b is not None:
            s[j, m] = b[j].abs()
    return s


def loop_conv(x, conv, mode):
    w, b = conv.weight, conv.bias
    out, cin = w.shape[:2]
    s = torch.zeros(out, cin + (b is not None), dtype=x.dtype)
    kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    mean_abs = x.abs().mean(0)
    positions = None
    for j in range(out):
        for c in range(cin):
            k = w[j, c].abs()[None, None]
            if mode == "sample_l2":
                norms = [F.conv2d(x[n, c].abs()[None, None], k, **kw).norm() for n in range(x.shape[0])]
                s[j, c] = torch.stack(norms).mean()
                positions = F.conv2d(x[:1, c:c + 1], k, **kw).numel()
            else:
                m = F.conv2d(mean_abs[c][None, None], k, **kw)
                positions = m.numel()
                s[j, c] = m.norm() if mode == "mean_l2" else m.sum()
        if b is not None:
            factor = positions if mode == "mean_l1" else positions ** 0.5
            s[j, cin] = b[j].abs() * factor
    return s


@pytest.mark.parametrize("bias", [True, False])
def test_linear_scores_match_loop(bias):
    layer = nn.Linear(7, 5, bias=bias).double()
    x = torch.randn(13, 7, dtype=torch.float64)
    acc = LinearScoreAccumulator(layer)
    acc.update(x[:6])
    acc.update(x[6:])  # chunked accumulation
    got = acc.scores(layer.weight, layer.bias)
    torch.testing.assert_close(got, loop_linear(x, layer.weight, layer.bias), rtol=1e-12, atol=1e-12)


CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1),
    dict(in_channels=2, out_channels=3, kernel_size=5),
    dict(in_channels=3, out_channels=5, kernel_size=3, stride=2, padding=1),
    dict(in_channels=2, out_channels=2, kernel_size=(3, 2), stride=(2, 1), padding=(2, 0), dilation=(1, 2)),
    dict(in_channels=4, out_channels=64, kernel_size=3, padding=1),  # many filters: exercises the Gram form
]


@pytest.mark.parametrize("mode", ["sample_l2", "mean_l2", "mean_l1"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_scores_match_loop(mode, bias, case):
    conv = nn.Conv2d(**case, bias=bias).double()
    x = torch.randn(5, case["in_channels"], 9, 8, dtype=torch.float64)
    acc = ConvScoreAccumulator(conv, mode)
    acc.update(x[:2], conv.weight)
    acc.update(x[2:], conv.weight)
    got = acc.scores(conv.weight, conv.bias)
    torch.testing.assert_close(got, loop_conv(x, conv, mode), rtol=1e-10, atol=1e-12)


STRIDE1_CASES = [
    dict(kernel_size=3, padding=1),
    dict(kernel_size=3, padding=0),
    dict(kernel_size=5, padding=2),
    dict(kernel_size=5, padding=0),
    dict(kernel_size=(3, 2), padding=(2, 0)),
    dict(kernel_size=(2, 4), padding=(1, 3)),
    dict(kernel_size=1, padding=0),
]


@pytest.mark.parametrize("form", ["direct", "patch", "auto"])
@pytest.mark.parametrize("case", STRIDE1_CASES)
@pytest.mark.parametrize("hw", [(5, 5), (9, 7), (17, 16)])
def test_kernel_shapes_and_paddings_match_loop(form, case, hw):
    conv = nn.Conv2d(3, 4, **case).double()
    x = torch.randn(4, 3, *hw, dtype=torch.float64)
    expected = loop_conv(x, conv, "sample_l2")
    acc = ConvScoreAccumulator(conv, "sample_l2", form=form)
    acc.update(x[:3], conv.weight)
    acc.update(x[3:], conv.weight)
    torch.testing.assert_close(acc.scores(conv.weight, conv.bias), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", ["direct", "patch", "pixel"])
@pytest.mark.parametrize("spatial", [1, 2, 4, 9])
def test_all_forms_agree(spatial, form):
    """Every exact form of the per-sample score gives the loop's numbers; the cost model only picks one."""
    conv = nn.Conv2d(8, 16, 3, padding=1, stride=1 + (spatial > 4)).double()
    x = torch.randn(6, 8, spatial, spatial, dtype=torch.float64)
    expected = loop_conv(x, conv, "sample_l2")
    acc = ConvScoreAccumulator(conv, "sample_l2", form=form)
    acc.update(x, conv.weight)
    torch.testing.assert_close(acc.scores(conv.weight, conv.bias), expected, rtol=1e-10, atol=1e-12)


def test_mean_l2_never_exceeds_sample_l2():
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.randn(10, 3, 8, 8, dtype=torch.float64)
    scores = {}
    for mode in ("sample_l2", "mean_l2"):
        acc = ConvScoreAccumulator(conv, mode)
        acc.update(x, conv.weight)
        scores[mode] = acc.scores(conv.weight, None)
    assert (scores["mean_l2"] <= scores["sample_l2"] + 1e-12).all()
    assert (scores["mean_l2"] < scores["sample_l2"]).any()


@pytest.mark.parametrize("layer, hw, form", [
    (nn.Conv2d(1, 20, 5), (28, 28), "direct"),  # LeNet-5: small filter banks next to 25x25 Gram matrices
    (nn.Conv2d(20, 50, 5), (12, 12), "direct"),
    (nn.Conv2d(16, 16, 3, padding=1), (32, 32), "patch"),  # ResNet-20 and VGG: 3x3 kernels
    (nn.Conv2d(3, 64, 3, padding=1), (32, 32), "patch"),
])
def test_cost_model_on_paper_layers(layer, hw, form):
    """The forms the cost model picks are the ones measured fastest (benchmarks/bench_prune_pass.py)."""
    assert ConvScoreAccumulator(layer, "sample_l2").chosen_form(hw) == form


@pytest.mark.parametrize("layer, hw, form", [
    (nn.Conv2d(1, 20, 5), (28, 28), "patch"),  # the compiled kernel forms 41 lag products per pixel for 5x5
    (nn.Conv2d(20, 50, 5), (12, 12), "patch"),
    (nn.Conv2d(16, 16, 3, padding=1), (32, 32), "patch"),
    (nn.Conv2d(512, 512, 3, padding=1), (2, 2), "pixel"),  # VGG's 2x2 maps: 10 pixel pairs against 45 kernel pairs
])
def test_cost_model_with_the_compiled_kernel(layer, hw, form):
    assert ConvScoreAccumulator(layer, "sample_l2").chosen_form(hw, compiled=True) == form


def test_cost_model_picks_pixel_form_only_for_maps_smaller_than_the_kernel():
    conv = nn.Conv2d(512, 512, 3, padding=1)
    acc = ConvScoreAccumulator(conv, "sample_l2")
    assert acc.chosen_form((2, 2)) == "pixel"
    assert acc.chosen_form((4, 4)) == "patch"
    assert acc.chosen_form((32, 32)) == "patch"


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="sample_l2"):
        ConvScoreAccumulator(nn.Conv2d(1, 1, 3), "median")
    with pytest.raises(ValueError, match="patch"):
        ConvScoreAccumulator(nn.Conv2d(1, 1, 3), "sample_l2", form="maps")


@pytest.mark.parametrize("form", ["direct", "patch", "pixel"])
def test_chunk_boundaries_do_not_change_scores(monkeypatch, form):
    """Tiny chunk limits split every stage into many pieces; the scores must not move."""
    import relief_nb.core.scores as scores

    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True).double()
    x = torch.randn(7, 3, 4, 3, dtype=torch.float64)
    expected = loop_conv(x, conv, "sample_l2")
    monkeypatch.setattr(scores, "_PATCH_ELEMENTS", 1)
    monkeypatch.setattr(scores, "_TILE_ELEMENTS", 1)
    monkeypatch.setattr(scores, "_GRAM_ELEMENTS", 1)
    monkeypatch.setattr(scores, "_MAP_ELEMENTS", 1)
    acc = ConvScoreAccumulator(conv, "sample_l2", form=form)
    acc.update(x, conv.weight)
    torch.testing.assert_close(acc.scores(conv.weight, conv.bias), expected, rtol=1e-10, atol=1e-12)
