"""The look every figure shares: readable names of networks and data sets, one colour and marker per method, plain
tick labels on log axes (``20k``, ``5%``, ``10x``), the diagonal mark of non-results, and saving."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import patheffects, ticker

from ..common.files import atomic_write
from ..common.paths import safe_name
from .published import published_table

__all__ = ["display_name", "save_figure"]

sns.set_theme(style="whitegrid", context="notebook")


_NETWORKS = {"lenet300-100": "LeNet-300-100", "lenet300": "LeNet-300-100", "lenet5": "LeNet-5",
             "vgg-like": "VGG-like", "vgglike": "VGG-like", "vgg19-64": "VGG-19 (64x64)",
             "resnet18-64": "ResNet-18 (64x64)"}


_DATASETS = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tiny-imagenet": "Tiny-ImageNet",
             "tiny": "Tiny-ImageNet"}


# One colour and marker per method of ours, the same in every figure; other methods get the next free ones.
_METHOD_STYLES = {"NNrelief": ("tab:blue", "o"), "magnitude (global)": ("tab:orange", "s"),
                  "magnitude (per layer)": ("tab:green", "^"), "random": ("tab:red", "v")}


_SPARE_STYLES = [("tab:purple", "D"), ("tab:brown", "P"), ("tab:pink", "<"), ("tab:olive", ">"), ("tab:cyan", "h")]


_PUBLISHED_MARKERS = ["X", "*", "D", "p", "h", "P", "<", ">"]


def display_name(name: str | None) -> str:
    """Readable network / run name: ``'lenet300-100'`` -> ``'LeNet-300-100'``, ``'resnet56-cifar100'`` ->
    ``'ResNet-56 on CIFAR-100'``; unknown names come back unchanged."""
    if not name:
        return ""

    def network(n: str) -> str | None:
        if n in _NETWORKS:
            return _NETWORKS[n]
        m = re.fullmatch(r"(vgg|resnet)(\d+)", n)
        return f"{'VGG' if m.group(1) == 'vgg' else 'ResNet'}-{m.group(2)}" if m else None

    if (net := network(name)) is not None:
        return net
    for key, data in _DATASETS.items():
        if name.endswith(f"-{key}") and (net := network(name[: -len(key) - 1])) is not None:
            return f"{net} on {data}"
    return name


def _heading(subject: str, what: str) -> str:
    return f"{subject}: {what}" if subject else what[:1].upper() + what[1:]


def _method_style(method: str, seen: dict[str, tuple[str, str]]) -> tuple[str, str]:
    if method not in seen:
        seen[method] = _METHOD_STYLES.get(method) or _SPARE_STYLES[len(
            [m for m in seen if m not in _METHOD_STYLES]) % len(_SPARE_STYLES)]
    return seen[method]


def _published_marker(method: str) -> str:
    methods = list(dict.fromkeys(published_table().method))
    return _PUBLISHED_MARKERS[methods.index(method) % len(_PUBLISHED_MARKERS)] if method in methods else "X"


def _published_label(method: str) -> str:
    return f"published: {method}"


def _fmt_count(v: float, _pos: object = None) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.3g}{suffix}"
    return f"{v:.3g}"


def _fmt_pct(v: float, _pos: object = None) -> str:
    return f"{v:.3g}%"


def _fmt_times(v: float, _pos: object = None) -> str:
    return f"{v:.3g}x"


def _fmt_pow10(v: float, _pos: object = None) -> str:
    k = math.log10(v) if v > 0 else 0.0
    return f"$10^{{{round(k)}}}$" if abs(k - round(k)) < 1e-9 else f"{v:.2g}"


def _log_ticks(axis: object, fmt: Callable[[float, object], str], max_ticks: int = 6) -> None:
    """Plain-number ticks on a log axis (1-2-5, 1-3 or decades, whatever fits ``max_ticks``), no minor labels."""
    lo, hi = sorted(axis.get_view_interval())
    lo = max(lo, 1e-300)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks: list[float] = []
    for mults in ((1, 2, 3, 5), (1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0 ** k for k in decades for m in mults if lo <= m * 10.0 ** k <= hi]
        if len(ticks) <= max_ticks:
            break
    if len(ticks) > max_ticks:
        ticks = ticks[:: math.ceil(len(ticks) / max_ticks)]
    if len(ticks) < 2:  # less than a decade without a 1-2-5 value inside: linear-style ticks
        ticks = [t for t in ticker.MaxNLocator(3).tick_values(lo, hi) if lo <= t <= hi and t > 0]
    axis.set_major_locator(ticker.FixedLocator(ticks))
    axis.set_major_formatter(ticker.FuncFormatter(fmt))
    axis.set_minor_formatter(ticker.NullFormatter())


def _watermark(ax: plt.Axes, text: str) -> plt.Text:
    """Stamp ``text`` diagonally across ``ax``, behind the data, sized so that it stays inside the axes."""
    wrapped = "\n".join(textwrap.fill(part, 20) for part in text.split("\n"))
    t = ax.text(0.5, 0.5, wrapped, transform=ax.transAxes, ha="center", va="center", rotation=28,
                rotation_mode="anchor", fontsize=20, fontweight="bold", color="tab:red", alpha=0.5, zorder=1,
                multialignment="center", clip_on=False,
                path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")])
    t.set_in_layout(False)
    t._relief_mark = True  # recognised by _fit_marks
    return t


def _fit_marks(fig: plt.Figure, fill: float = 0.9) -> None:
    """After layout: size every mark to fill at most ``fill`` of its axes (6 to 40 pt)."""
    marks = [t for ax in fig.axes for t in ax.texts if getattr(t, "_relief_mark", False)]
    if not marks:
        return
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    for t in marks:
        box = t.axes.get_window_extent(renderer)
        for _ in range(4):
            ext = t.get_window_extent(renderer)
            scale = min(fill * box.width / max(ext.width, 1), fill * box.height / max(ext.height, 1))
            size = float(np.clip(t.get_fontsize() * scale, 6, 40))
            if abs(size - t.get_fontsize()) < 0.25:
                break
            t.set_fontsize(size)


def _finish(fig: plt.Figure, mark: str | None, axes: list[plt.Axes]) -> plt.Figure:
    if mark:
        for ax in axes:
            _watermark(ax, mark)
    _fit_marks(fig)
    return fig


def save_figure(fig: plt.Figure, folder: str | Path, name: str) -> Path:
    """Save ``fig`` as ``folder/name.png`` (120 dpi, tight bounding box) and return the path."""
    path = Path(folder) / f"{safe_name(name, 'figure name', '.png', 'accuracy')}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, writer=lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    return path


def _published_points(ax: plt.Axes, network: str, x_of: Callable[[pd.Series], pd.Series]) -> None:
    for row in published_table(network).itertuples():
        ax.scatter(x_of(row.compression), row.error_pct, marker=_published_marker(row.method), s=70,
                   color="0.55", edgecolor="k", linewidth=0.8, zorder=5,
                   label=f"{_published_label(row.method)}: {row.compression:g}x, {row.error_pct:.2f}%")
