"""Vectorized scores against straightforward loops (float64, tight tolerance)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relief_nb.scores import ConvScoreAccumulator, LinearScoreAccumulator


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


@pytest.mark.parametrize("form", ["gram", "maps"])
@pytest.mark.parametrize("spatial", [2, 4, 16])
def test_gram_and_map_forms_agree(spatial, form):
    """Both exact forms of the per-sample score give the loop's numbers; the cost model only picks one."""
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


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="sample_l2"):
        ConvScoreAccumulator(nn.Conv2d(1, 1, 3), "median")
