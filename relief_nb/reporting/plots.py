"""Figures (matplotlib + seaborn; their shared look is :mod:`.style`): test error vs. parameters, per-layer
sparsity, scores, the alpha rule, the input-pixel map and a cross-network summary.

Conventions: every title names what is plotted and for which network; errors are in % everywhere; log axes carry
plain tick labels (``20k``, ``5%``, ``10x``); every figure function takes ``mark`` (e.g. ``"SMOKE"``), which is
stamped diagonally across each panel so that smoke-profile or synthetic stand-in figures cannot pass for results.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib import cm, ticker
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from torch import nn

from ..core.masks import current_mask
from ..core.selection import select
from ..graph.structure import PruningGraph
from ..pruning.relief import ReliefConfig, score_layers
from .marks import SMOKE_MARK, SYNTHETIC_MARK
from .published import published_table
from .style import (
    _DATASETS,
    _finish,
    _fmt_count,
    _fmt_pct,
    _fmt_pow10,
    _fmt_times,
    _heading,
    _log_ticks,
    _method_style,
    _published_label,
    _published_marker,
    _published_points,
    _watermark,
    display_name,
    save_figure,
)

__all__ = [
    "SMOKE_MARK",
    "SYNTHETIC_MARK",
    "display_name",
    "layer_scores",
    "plot_accuracy_vs_parameters",
    "plot_alpha_effect",
    "plot_alpha_rule",
    "plot_input_pixel_map",
    "plot_layer_sparsity",
    "plot_score_distributions",
    "plot_summary",
    "save_figure",
]

sns.set_theme(style="whitegrid", context="notebook")


# ---------------------------------------------------------------------------------------------- figures


def plot_accuracy_vs_parameters(metrics: Mapping[str, pd.DataFrame], network: str | None = None,
                                ax: plt.Axes | None = None, title: str = "",
                                mark: str | None = None) -> plt.Figure:
    """Test error (%) against remaining parameters (log axis, shrinking to the right), one line per run.

    Each run's dense error is a dashed line in its colour; its final compression and error are in its legend
    label. With ``network``, the published points of that network
    (:func:`relief_nb.reporting.published.published_table`) are grey markers, one shape per method, in the legend.
    ``title`` replaces the default title.
    """
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(11, 4.8), layout="constrained")
    fig = ax.figure
    total = None
    for label, df in metrics.items():
        if df.empty:
            continue
        last = df.iloc[-1]
        line = ax.plot(df.params_remaining, 100 * df.test_error, marker="o", ms=4,
                       label=f"{label} (final {last.compression:.1f}x, {100 * last.test_error:.2f}%)")[0]
        ax.axhline(100 * df.test_error.iloc[0], color=line.get_color(), ls="--", lw=0.8)
        total = total or df.params_total.iloc[0]
    handles, labels = ax.get_legend_handles_labels()
    n_runs = len(handles)
    if total is not None:
        handles.append(Line2D([], [], color="0.4", ls="--", lw=0.8))
        labels.append("dense error of each run (dashed)")
    if network is not None and total is not None:
        _published_points(ax, network, lambda c: total / c)
        h, l = ax.get_legend_handles_labels()
        handles += h[n_runs:]
        labels += l[n_runs:]
    ax.set_xscale("log")
    ax.invert_xaxis()
    _log_ticks(ax.xaxis, _fmt_count, max_ticks=8)
    ax.set_xlabel("remaining parameters (weights + biases of conv and linear layers; log scale)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title or _heading(display_name(network), "test error vs remaining parameters"))
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _finish(fig, mark, [ax])


def plot_layer_sparsity(layers: pd.DataFrame, title: str = "", mark: str | None = None, *,
                        network: str | None = None) -> plt.Figure:
    """Per layer (rows, input at the top): weights + biases remaining (%, log axis) and units alive (%), one
    line per iteration. ``title`` (or ``network``) names the network / run, e.g. ``'lenet300-mnist'``."""
    df = layers.copy()
    df["layer"] = df["layer"].astype(str)
    df["alive_pct"] = 100 * df.alive_units / df.units
    df["remaining_pct"] = 100 * df.remaining_fraction
    order = list(dict.fromkeys(df.layer))
    position = {name: i for i, name in enumerate(order)}
    iterations = sorted(df.iteration.unique())
    height = min(12.0, max(3.2, 0.24 * len(order) + 1.6))
    fig, axes = plt.subplots(1, 2, figsize=(11, height), sharey=True, layout="constrained")
    cmap, norm = plt.get_cmap("viridis"), Normalize(min(iterations), max(max(iterations), min(iterations) + 1))
    for it in iterations:
        rows = df[df.iteration == it]
        y = rows.layer.map(position)
        for ax, column in zip(axes, ("remaining_pct", "alive_pct")):
            ax.plot(rows[column], y, marker="o", ms=3.5, lw=1.2, color=cmap(norm(it)), label=f"iteration {it}")
    axes[0].set_xscale("log")
    _log_ticks(axes[0].xaxis, _fmt_pct)
    axes[1].set_xlim(-3, 103)
    axes[1].xaxis.set_major_formatter(ticker.FuncFormatter(_fmt_pct))
    step = math.ceil(len(order) / 45)  # beyond ~45 layers, name every step-th one
    axes[0].set_yticks(range(0, len(order), step), order[::step], fontsize=8)
    axes[0].set_ylim(len(order) - 0.5, -0.5)
    axes[0].set_xlabel("weights + biases remaining (%, log scale)")
    axes[1].set_xlabel("units alive (%)")
    axes[0].set_ylabel("layer (input at the top)")
    if len(iterations) <= 8:
        axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    else:
        bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="pruning iteration", pad=0.01)
        bar.ax.yaxis.set_major_locator(ticker.MaxNLocator(6, integer=True))
    fig.suptitle(_heading(display_name(network or title), "weights remaining and units alive per layer"))
    return _finish(fig, mark, list(axes))


def layer_scores(model: nn.Module, batch: torch.Tensor, config: ReliefConfig | None = None,
                 graph: PruningGraph | None = None) -> dict[str, torch.Tensor]:
    """NNrelief scores (units x connections [+ bias]) of every layer on ``batch``, without pruning anything: the
    pass's own collector, :func:`relief_nb.pruning.relief.score_layers`."""
    return score_layers(model, batch, config, graph)


def plot_score_distributions(scores: Mapping[str, torch.Tensor], title: str = "", max_per_layer: int = 20000,
                             mark: str | None = None, *, network: str | None = None) -> plt.Figure:
    """Per layer, a histogram of each connection's share of its unit's total score (non-zero shares, log
    axis shared by all panels); layers with more than ``max_per_layer`` shares are shown through a fixed random
    sample of that size. ``title`` (or ``network``) names the network / run."""
    if not scores:
        raise ValueError("plot_score_distributions needs the scores of at least one layer")
    g = torch.Generator().manual_seed(0)
    shares = {}
    for name, s in scores.items():
        s = s.detach().cpu().double()
        share = s / s.sum(1, keepdim=True).clamp_min(1e-30)
        values = share[share > 0].flatten()
        if values.numel() > max_per_layer:
            values = values[torch.randperm(values.numel(), generator=g)[:max_per_layer]]
        shares[name] = values.numpy()
    everything = np.concatenate([v for v in shares.values() if v.size] or [np.array([1e-3, 1.0])])
    lo, hi = everything.min(), everything.max()
    bins = np.logspace(np.log10(lo), np.log10(hi) + 1e-9 if hi > lo else np.log10(lo) + 1, 41)
    ncols = min(4, len(shares))
    nrows = math.ceil(len(shares) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols + 0.6, 2.3 * nrows + 1.0), sharex=True,
                             squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax, (name, values) in zip(flat, shares.items()):
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.85)
        ax.set_title(name, fontsize=10)
        ax.set_xscale("log")
        ax.yaxis.set_major_locator(ticker.MaxNLocator(4))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_fmt_count))
        ax.tick_params(labelsize=8)
    for ax in flat[len(shares):]:
        ax.remove()
    used = flat[: len(shares)]
    _log_ticks(used[0].xaxis, _fmt_pow10, max_ticks=4)
    for i, ax in enumerate(used):  # sharex hides inner tick labels; show them under the last panel per column
        if i + ncols >= len(used):
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.supxlabel("connection's share of its unit's total score (log scale)", fontsize=10)
    fig.supylabel("connections", fontsize=10)
    fig.suptitle(_heading(display_name(network or title), "distribution of NNrelief scores per layer"))
    return _finish(fig, mark, used)


def plot_alpha_rule(unit_scores: torch.Tensor, alpha: float, title: str = "", mark: str | None = None, *,
                    network: str | None = None, unit: str = "") -> plt.Figure:
    """One unit: its connections' scores sorted (kept ones blue), their cumulative share (red) and the ``alpha``
    line where the rule cuts. ``title`` / ``network`` / ``unit`` (e.g. ``'fc2, unit 0'``) name what is shown."""
    s = unit_scores.detach().cpu().double()
    keep = select(s.unsqueeze(0), alpha)[0]
    order = torch.argsort(s, descending=True)
    sorted_s, sorted_keep = s[order].numpy(), keep[order].numpy()
    cumulative = np.cumsum(sorted_s) / max(sorted_s.sum(), 1e-30)
    fig, ax = plt.subplots(figsize=(8.5, 4.2), layout="constrained")
    x = np.arange(1, len(sorted_s) + 1)
    ax.bar(x, sorted_s, color=np.where(sorted_keep, "tab:blue", "0.7"), width=1.0, linewidth=0)
    ax.set_xlabel("the unit's incoming connections, sorted by score (rank)")
    ax.set_ylabel("score")
    ax2 = ax.twinx()
    ax2.plot(x, cumulative, color="tab:red")
    ax2.axhline(alpha, color="tab:red", ls="--", lw=0.8)
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("cumulative share of the score", color="tab:red")
    ax2.grid(False)
    subject = ", ".join(p for p in (display_name(network), title, unit) if p)
    kept = int(keep.sum())
    ax.set_title(_heading(subject, f"NNrelief alpha rule, alpha = {alpha:g} (dashed)")
                 + f"\nkeeps {kept} of {len(s)} incoming connections (blue), drops {len(s) - kept} (grey)")
    return _finish(fig, mark, [ax])


def plot_alpha_effect(effect: pd.DataFrame, alpha: float | None = None, network: str | None = None,
                      mark: str | None = None) -> plt.Figure:
    """What one NNrelief pass does at each alpha (no retraining): the share of every layer's connections kept
    (left) and the accuracy left on an evaluation batch (right), one point per alpha; ``alpha`` is highlighted.

    ``effect``: one row per alpha and layer with ``alpha``, ``layer``, ``kept_pct`` and ``accuracy_pct`` (and
    ``dense_accuracy_pct``), as :class:`relief_nb.notebooks.AlphaExplorer` computes it."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for layer, df in effect.groupby("layer", sort=False):
        left.plot(df.alpha, df.kept_pct, marker="o", ms=4, label=str(layer))
    per_alpha = effect.drop_duplicates("alpha")
    right.plot(per_alpha.alpha, per_alpha.accuracy_pct, marker="o", ms=4, color="tab:red",
               label="after one pass, before retraining")
    right.axhline(per_alpha.dense_accuracy_pct.iloc[0], color="0.4", ls="--", lw=0.8, label="dense")
    if alpha is not None:
        row = per_alpha[np.isclose(per_alpha.alpha, alpha)]
        for ax in (left, right):
            ax.axvline(alpha, color="0.2", lw=1.2, alpha=0.6)
        if len(row):
            right.plot(row.alpha, row.accuracy_pct, marker="o", ms=9, color="tab:red")
    left.set_yscale("log")
    left.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    left.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g} %"))
    left.set_xlabel("alpha (the share of each unit's signal its kept connections carry)")
    left.set_ylabel("connections kept (% of the layer; log scale)")
    left.legend(title="layer", fontsize=8)
    right.set_xlabel("alpha")
    right.set_ylabel("accuracy on the evaluation batch (%)")
    right.legend(fontsize=8, loc="lower right")
    chosen = f", alpha = {alpha:g}" if alpha is not None else ""
    left.set_title(_heading(display_name(network), f"connections kept by one pass{chosen}"))
    if alpha is not None and len(row):
        right.set_title(f"accuracy {row.accuracy_pct.iloc[0]:.1f} % (dense {row.dense_accuracy_pct.iloc[0]:.1f} %)")
    else:
        right.set_title("accuracy left by one pass, before retraining")
    return _finish(fig, mark, [left, right])


def plot_input_pixel_map(model: nn.Module, shape: tuple[int, int] = (28, 28), title: str = "",
                         mark: str | None = None, *, network: str | None = None,
                         vmax: float = 1.0) -> plt.Figure:
    """For a model whose first layer is Linear on flattened pixels: the fraction of that layer's units that
    still read each pixel, on a fixed 0..``vmax`` colour scale so that dense and pruned maps compare.
    ``network`` and ``title`` (e.g. ``'dense'``, ``'after the last iteration'``) name what is shown."""
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    if not isinstance(first, nn.Linear) or first.in_features != shape[0] * shape[1]:
        raise ValueError(f"the input-pixel map needs a first Linear layer over {shape[0]}x{shape[1]} pixels")
    counts = (current_mask(first) != 0).sum(0).reshape(shape).cpu().numpy()
    fraction = counts / first.out_features
    fig, ax = plt.subplots(figsize=(6.2, 4.6), layout="constrained")
    im = ax.imshow(fraction, cmap="magma", vmin=0.0, vmax=vmax)
    ax.grid(False)
    ax.set_xlabel("pixel column")
    ax.set_ylabel("pixel row")
    ax.set_xticks(np.arange(0, shape[1], 7))
    ax.set_yticks(np.arange(0, shape[0], 7))
    bar = fig.colorbar(im, ax=ax, label=f"share of the {first.out_features} first-layer units reading it")
    bar.ax.yaxis.set_major_locator(ticker.MaxNLocator(5))
    subject = ", ".join(p for p in (display_name(network), title) if p)
    ax.set_title(_heading(subject, "input pixels read by the first layer")
                 + f"\n{int((counts > 0).sum())} of {counts.size} pixels still read", fontsize=11)
    return _finish(fig, mark, [ax])


_SUMMARY_COLUMNS = ("network", "dataset", "method", "seed", "error_pct", "compression", "synthetic")


def _as_bool(values: pd.Series) -> pd.Series:
    if values.dtype == object:
        return values.map(lambda v: str(v).strip().lower() in ("true", "1", "yes"))
    return values.fillna(False).astype(bool)


def plot_summary(results: pd.DataFrame, mark: str | None = None) -> plt.Figure:
    """Test error (%) against compression (log axis), one panel per (network, data set), one point per run.

    ``results`` has one row per run: network, dataset, method, seed, error_pct, compression, synthetic. Each
    method has the same colour and marker in every panel; the published points of each network are grey
    markers. Panels with any synthetic row are stamped ``SYNTHETIC stand-in: not a result``.
    """
    if results is None or len(results) == 0:
        raise ValueError("plot_summary needs at least one run: `results` is empty (expected one row per run "
                         f"with columns {', '.join(_SUMMARY_COLUMNS)})")
    missing = [c for c in _SUMMARY_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"plot_summary: `results` lacks the column(s) {', '.join(missing)}")
    df = results.copy()
    df["synthetic"] = _as_bool(df.synthetic)
    groups = list(df.groupby(["network", "dataset"], sort=False))
    ncols = len(groups) if len(groups) <= 3 else 2 if len(groups) == 4 else 3
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.6 * ncols, 9.0), 3.6 * nrows + 1.8), squeeze=False,
                             layout="constrained")
    flat = list(axes.flat)
    styles: dict[str, tuple[str, str]] = {}
    for method in dict.fromkeys(df.method):  # fixed order: same style per method in every panel
        _method_style(method, styles)
    legend: dict[str, object] = {}
    for ax, ((network, dataset), rows) in zip(flat, groups):
        for method, runs in rows.groupby("method", sort=False):
            colour, marker = styles[method]
            h = ax.scatter(runs.compression, runs.error_pct, color=colour, marker=marker, s=45, alpha=0.9,
                           edgecolor="white", linewidth=0.5, zorder=4)
            legend.setdefault(method, h)
        for row in published_table(network).itertuples():
            h = ax.scatter(row.compression, row.error_pct, marker=_published_marker(row.method), s=70,
                           color="0.55", edgecolor="k", linewidth=0.8, zorder=5)
            legend.setdefault(_published_label(row.method), h)
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.15)
        ax.autoscale_view()
        _log_ticks(ax.xaxis, _fmt_times)
        ax.set_title(f"{display_name(network)} on {_DATASETS.get(str(dataset), dataset)}", fontsize=11)
        ax.set_xlabel("compression (log scale)")
        ax.set_ylabel("test error (%)")
        stamp = list(dict.fromkeys(m for m in (mark, SYNTHETIC_MARK if rows.synthetic.any() else None) if m))
        if stamp:
            _watermark(ax, "\n".join(stamp))
    for ax in flat[len(groups):]:
        ax.remove()
    fig.legend(list(legend.values()), list(legend.keys()), loc="outside lower center", fontsize=8,
               ncols=min(3, len(legend)), title="method (grey: published numbers of other papers)",
               title_fontsize=9)
    fig.suptitle("Test error vs compression per network and data set (one point per run)")
    return _finish(fig, None, [])
