"""Figures render, say what they show, and no two texts on them overlap.

All inputs here are small made-up test fixtures (metrics, layer tables, scores, result rows), shaped like the
real ones; nothing in this file is a result.
"""

from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from torch import nn  # noqa: E402

from relief_nb.core.masks import shrink_mask  # noqa: E402
from relief_nb.reporting import plots as plots  # noqa: E402

LAYERS = ["features.0", "features.3", "features.7", "features.10", "features.14", "features.17", "features.20",
          "features.24", "features.27", "features.30", "classifier.1", "classifier.4", "classifier.6"]


# ---------------------------------------------------------------------------------------------- checker
def drawn_texts(fig: plt.Figure) -> list[tuple[Text, object]]:
    """Draw ``fig`` and return every Text artist that was actually drawn with non-empty visible text (tick
    labels, axis labels, titles, legend texts, annotations, marks), with its window extent."""
    drawn: list[Text] = []
    original = Text.draw

    def recording_draw(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return original(self, renderer)

    Text.draw = recording_draw
    try:
        fig.canvas.draw()
    finally:
        Text.draw = original
    renderer = fig.canvas.get_renderer()
    in_figure = {id(t) for t in fig.findobj(Text)}
    assert all(id(t) in in_figure for t in drawn)
    return [(t, t.get_window_extent(renderer)) for t in drawn]


def overlapping_texts(fig: plt.Figure, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of drawn texts whose window extents overlap by more than ``tolerance`` pixels both ways."""
    boxes = drawn_texts(fig)
    pairs = []
    for (a, ba), (b, bb) in itertools.combinations(boxes, 2):
        dx = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
        dy = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
        if dx > tolerance and dy > tolerance:
            pairs.append((a.get_text(), b.get_text()))
    return pairs


def titles(fig: plt.Figure) -> str:
    parts = [fig._suptitle.get_text() if fig._suptitle else ""]
    parts += [ax.get_title(loc) for ax in fig.axes for loc in ("left", "center", "right")]
    return " | ".join(p for p in parts if p)


def data_axes(fig: plt.Figure) -> list[plt.Axes]:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def check_figure(fig: plt.Figure, *title_words: str) -> None:
    overlaps = overlapping_texts(fig)
    assert not overlaps, f"overlapping texts: {overlaps}"
    title = titles(fig)
    for word in title_words:
        assert word in title, f"{word!r} not in title {title!r}"
    supx = fig._supxlabel.get_text() if fig._supxlabel else ""
    supy = fig._supylabel.get_text() if fig._supylabel else ""
    # every axis that shows tick labels is labelled (by itself or by the figure's shared label)
    for ax in data_axes(fig):
        for axis, sup in ((ax.xaxis, supx), (ax.yaxis, supy)):
            if axis.get_visible() and any(t.get_visible() and t.get_text() for t in axis.get_ticklabels()):
                assert axis.get_label_text() or sup, f"unlabelled axis in {titles(fig)!r}"
    assert any(ax.get_xlabel() for ax in data_axes(fig)) or supx, "no x label"
    assert any(ax.get_ylabel() for ax in data_axes(fig)) or supy, "no y label"


def has_mark(fig: plt.Figure, word: str) -> bool:
    return any(word in t.get_text() for t, _ in drawn_texts(fig))


# ---------------------------------------------------------------------------------------------- fixtures
def _metrics(total: int, n: int, final: float, error: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    compression = np.geomspace(1, final, n)
    remaining = np.round(total / compression)
    test_error = error + np.linspace(0, 0.004, n) + rng.normal(0, 5e-4, n)
    return pd.DataFrame({"iteration": range(n), "params_remaining": remaining, "params_total": total,
                         "test_error": test_error, "compression": total / remaining,
                         "val_acc": 1 - test_error, "test_acc": 1 - test_error})


@pytest.fixture
def metrics() -> dict[str, pd.DataFrame]:
    # three runs ending at almost the same compression: their old "20.xx" annotations collided
    return {"NNrelief": _metrics(266_610, 15, 20.1, 0.017, 0),
            "magnitude (global)": _metrics(266_610, 15, 20.4, 0.018, 1),
            "magnitude (per layer)": _metrics(266_610, 15, 19.8, 0.0175, 2)}


@pytest.fixture
def layers() -> pd.DataFrame:
    rows = []
    for it in range(6):
        for j, name in enumerate(LAYERS):
            units = 64 * (j % 5 + 1)
            rows.append({"iteration": it, "layer": name, "remaining_fraction": max(0.85 ** (it * (1 + j / 4)), 0.004),
                         "units": units, "alive_units": int(units * 0.93 ** (it * (j % 4 + 1)))})
    return pd.DataFrame(rows)


@pytest.fixture
def scores() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {name: torch.rand(40, 60, generator=g) ** 5 for name in LAYERS[:7]}


@pytest.fixture
def lenet300() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


@pytest.fixture
def results() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for network, dataset, synthetic in [("lenet300-100", "mnist", False), ("lenet5", "mnist", True),
                                        ("vgg-like", "cifar10", False)]:
        for method, compression, error in [("NNrelief", 20, 1.7), ("magnitude (global)", 19, 1.8),
                                           ("magnitude (per layer)", 18, 1.9), ("random", 17, 3.0)]:
            for seed in range(3):
                rows.append({"network": network, "dataset": dataset, "method": method, "seed": seed,
                             "error_pct": error + rng.normal(0, 0.1),
                             "compression": compression * rng.uniform(0.9, 1.1), "synthetic": synthetic})
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------------------- tests
def test_checker_fails_on_overlapping_annotations():
    fig, ax = plt.subplots()
    ax.set_title("overlap test")
    ax.annotate("20.1x", (0.5, 0.5))
    ax.annotate("20.4x", (0.5, 0.5), xytext=(2, 2), textcoords="offset points")
    assert ("20.1x", "20.4x") in overlapping_texts(fig)
    with pytest.raises(AssertionError, match="overlapping"):
        check_figure(fig)


@pytest.mark.parametrize("network", ["lenet300-100", "lenet5"])
def test_accuracy_vs_parameters(metrics, network):
    fig = plots.plot_accuracy_vs_parameters(metrics, network=network)
    check_figure(fig, plots.display_name(network), "test error", "remaining parameters")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "NNrelief (final 20.1x" in labels[0]
    assert sum("published" in label for label in labels) == 5  # one legend entry per published method
    assert not fig.axes[0].texts  # no free-floating labels
    assert "(%)" in fig.axes[0].get_ylabel()


def test_accuracy_vs_parameters_notebook_call(metrics):
    fig = plots.plot_accuracy_vs_parameters({"label": metrics["NNrelief"]}, network="lenet300-100")
    check_figure(fig, "LeNet-300-100: test error vs remaining parameters")


def test_layer_sparsity(layers):
    fig = plots.plot_layer_sparsity(layers, "vgglike-cifar10")
    check_figure(fig, "VGG-like on CIFAR-10", "per layer")
    for label in fig.axes[0].get_xticklabels():  # plain percentages, never 6x10^-1
        assert "^" not in label.get_text()
    assert all(t.get_text().endswith("%") for t in fig.axes[0].get_xticklabels() if t.get_text())


def test_layer_sparsity_many_iterations(layers):
    many = pd.concat([layers.assign(iteration=layers.iteration + 6 * k) for k in range(4)])
    check_figure(plots.plot_layer_sparsity(many, network="lenet5"), "LeNet-5")


def test_score_distributions(scores):
    fig = plots.plot_score_distributions(scores, "lenet300-mnist")
    check_figure(fig, "LeNet-300-100 on MNIST", "scores")


@pytest.mark.parametrize("net", ["mobilenetv2", "grouped"])
def test_layer_scores_of_depthwise_and_grouped_convs(net):
    """layer_scores is the pass's own collector (relief_nb.pruning.relief.score_layers): it scores depthwise and grouped
    convs (one row per filter, one column per input channel of its group, then the bias), and plots them."""
    from nets import MobileNetV2

    from relief_nb.pruning.relief import score_layers

    torch.manual_seed(0)
    if net == "mobilenetv2":
        model, shape = MobileNetV2(), (3, 16, 16)
    else:
        model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1, groups=2),
                              nn.ReLU(), nn.Conv2d(12, 12, 3, groups=12), nn.ReLU(), nn.Flatten(),
                              nn.Linear(12 * 6 * 6, 5))
        shape = (4, 8, 8)
    x = torch.rand(8, *shape)
    scores = plots.layer_scores(model, x)
    same = score_layers(model, x)
    assert scores.keys() == same.keys() and all(torch.equal(scores[k], same[k]) for k in scores)
    grouped = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert grouped
    for name, m in grouped:
        assert scores[name].shape == (m.out_channels, m.in_channels // m.groups + (m.bias is not None))
        assert bool(torch.isfinite(scores[name]).all()) and bool((scores[name] >= 0).all())
    check_figure(plots.plot_score_distributions(scores, network=net), "scores")


def test_alpha_rule():
    unit = torch.rand(301, generator=torch.Generator().manual_seed(0)) ** 4
    fig = plots.plot_alpha_rule(unit, 0.95, network="lenet300-100", unit="fc2, unit 0")
    check_figure(fig, "LeNet-300-100", "alpha rule", "alpha = 0.95")
    check_figure(plots.plot_alpha_rule(unit, 0.95), "alpha rule")  # the notebook call


def test_input_pixel_map_dense_and_pruned_share_a_scale(lenet300):
    dense = plots.plot_input_pixel_map(lenet300, title="dense", network="lenet300-100")
    check_figure(dense, "LeNet-300-100", "dense", "input pixels")
    keep = torch.rand(300, 784, generator=torch.Generator().manual_seed(0)) < 0.3
    shrink_mask(lenet300[1], "weight", keep)
    pruned = plots.plot_input_pixel_map(lenet300, title="after the last iteration")
    check_figure(pruned, "after the last iteration")
    for fig in (dense, pruned):
        image = fig.axes[0].images[0]
        assert image.get_clim() == (0.0, 1.0)
        assert image.get_array().max() <= 1.0
    assert np.allclose(dense.axes[0].images[0].get_array(), 1.0)


def test_summary(results):
    fig = plots.plot_summary(results)
    check_figure(fig, "Test error vs compression", "LeNet-300-100 on MNIST", "LeNet-5 on MNIST",
                 "VGG-like on CIFAR-10")
    axes = {ax.get_title(): ax for ax in data_axes(fig)}
    marked = {title for title, ax in axes.items() if any("SYNTHETIC" in t.get_text() for t in ax.texts)}
    assert marked == {"LeNet-5 on MNIST"}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:4] == ["NNrelief", "magnitude (global)", "magnitude (per layer)", "random"]
    assert sum("published" in label for label in legend) == 5
    # the same method keeps its colour in every panel
    colours = {}
    for ax in axes.values():
        for coll, method in zip(ax.collections[:4], ["NNrelief", "magnitude (global)", "magnitude (per layer)",
                                                     "random"]):
            colours.setdefault(method, set()).add(tuple(np.round(coll.get_facecolor()[0], 3)))
    assert all(len(c) == 1 for c in colours.values())


def test_summary_rejects_empty_frame(results):
    with pytest.raises(ValueError, match="empty"):
        plots.plot_summary(results.iloc[:0])
    with pytest.raises(ValueError, match="synthetic"):
        plots.plot_summary(results.drop(columns="synthetic"))


def _all_figures(metrics, layers, scores, lenet300, results, mark):
    unit = torch.rand(120, generator=torch.Generator().manual_seed(1))
    return [plots.plot_accuracy_vs_parameters(metrics, network="lenet5", mark=mark),
            plots.plot_layer_sparsity(layers, "lenet300-mnist", mark=mark),
            plots.plot_score_distributions(scores, "lenet300-mnist", mark=mark),
            plots.plot_alpha_rule(unit, 0.9, mark=mark),
            plots.plot_input_pixel_map(lenet300, title="dense", mark=mark),
            plots.plot_summary(results, mark=mark)]


@pytest.mark.parametrize("mark", ["SMOKE", plots.SYNTHETIC_MARK])
def test_mark_is_stamped_without_overlaps(metrics, layers, scores, lenet300, results, mark):
    for fig in _all_figures(metrics, layers, scores, lenet300, results, mark):
        assert has_mark(fig, mark.split()[0]), titles(fig)
        assert not overlapping_texts(fig), titles(fig)


def test_no_mark_by_default(metrics, layers, scores, lenet300, results):
    figures = _all_figures(metrics, layers, scores, lenet300, results.assign(synthetic=False), None)
    assert not any(has_mark(fig, "SMOKE") or has_mark(fig, "SYNTHETIC") for fig in figures)


def test_display_name():
    assert plots.display_name("lenet300-100") == "LeNet-300-100"
    assert plots.display_name("lenet5-mnist") == "LeNet-5 on MNIST"
    assert plots.display_name("resnet56-cifar100") == "ResNet-56 on CIFAR-100"
    assert plots.display_name("dense LeNet-300-100") == "dense LeNet-300-100"


def test_sweep_figure():
    """relief_nb.sweeps.sweep.plot_sweep on a made-up sweep table: 4 alpha panels, 4 methods, 3 seeds, 6 iterations."""
    from relief_nb.sweeps.sweep import aggregate, plot_sweep, sweep_report

    rng = np.random.default_rng(0)
    rows = []
    for alpha, seed, method, it in itertools.product((0.8, 0.9, 0.95, 0.99), (0, 1, 2),
                                                     ("NNrelief", "magnitude (global)", "magnitude (per layer)",
                                                      "random"), range(6)):
        compression = (1 / alpha) ** (3 * it)
        rows.append({"experiment": "lenet300-mnist", "network": "lenet300-100", "dataset": "mnist",
                     "method": method, "alpha_conv": 0.9, "alpha_fc": alpha, "seed": seed, "iteration": it,
                     "compression": compression, "flops_reduction": compression,
                     "test_error_pct": 1.6 + 0.05 * it + rng.normal(0, 0.05), "val_error_pct": 1.8,
                     "params_remaining": 266_610 / compression, "synthetic": False, "run": f"r{alpha}{seed}{method}",
                     "folder": "", "status": "done", "error": None})
    fig = plot_sweep(aggregate(pd.DataFrame(rows)))  # a table without wall_time_s, as older sweep.csv files
    check_figure(fig, "LeNet-300-100", "MNIST", "test error vs compression")
    report = sweep_report(pd.DataFrame(rows))
    assert report.count("## lenet300-mnist") == 4 and "Wall time" not in report
    assert len(data_axes(fig)) == 4


def test_alpha_explorer_keeps_more_as_alpha_grows_and_is_static_when_headless(monkeypatch):
    import ipywidgets
    import torch

    from relief_nb import create_model
    from relief_nb.notebooks import AlphaExplorer
    from relief_nb.notebooks.explorer import headless

    g = torch.Generator().manual_seed(0)
    model = create_model("lenet300-100", seed=0)
    batch, x = torch.rand(128, 1, 28, 28, generator=g), torch.rand(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explorer = AlphaExplorer(model, batch, x, y, alphas=(0.5, 0.9, 1.0), network="lenet300-100")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is left alone
    kept = explorer.effect.groupby("alpha", sort=True).kept.sum()
    assert kept.is_monotonic_increasing and kept.iloc[0] < kept.iloc[-1]
    assert set(explorer.table(0.9).layer) == {"fc1", "fc2", "fc3"}
    fig = explorer.figure(0.9)
    assert "alpha = 0.9" in fig.axes[0].get_title()
    plt.close(fig)
    monkeypatch.setenv("RELIEF_NB_FAST", "1")
    assert headless() and explorer.show() is None  # papermill / nbval: the figure is the explorer
    monkeypatch.delenv("RELIEF_NB_FAST")
    monkeypatch.delenv("RELIEF_NB_PROGRESS", raising=False)
    box = explorer.show(0.92)
    slider = box.children[0]
    assert isinstance(slider, ipywidgets.SelectionSlider) and slider.value == 0.9
    assert [v for _, v in slider.options] == [0.5, 0.9, 1.0]
