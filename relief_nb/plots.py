"""Figures (matplotlib + seaborn): accuracy vs. parameters, per-layer sparsity, scores, the input-pixel map."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import nn

from .masks import current_mask
from .published import published_table
from .relief import ReliefConfig, effective
from .scores import ConvScoreAccumulator, LinearScoreAccumulator
from .selection import select
from .structure import PruningGraph, trace_model

__all__ = [
    "plot_accuracy_vs_parameters",
    "plot_alpha_rule",
    "plot_input_pixel_map",
    "plot_layer_sparsity",
    "plot_score_distributions",
    "save_figure",
    "layer_scores",
]

sns.set_theme(style="whitegrid", context="notebook")


def save_figure(fig: plt.Figure, folder: str | Path, name: str) -> Path:
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_accuracy_vs_parameters(metrics: Mapping[str, pd.DataFrame], network: str | None = None,
                                ax: plt.Axes | None = None, title: str = "") -> plt.Figure:
    """Test error (%) against remaining parameters (log axis) over iterations, one line per run; the dense
    baseline as a dashed line and, for LeNets, the published points of SPEC.md."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for label, df in metrics.items():
        line = ax.plot(df.params_remaining, 100 * df.test_error, marker="o", label=label)[0]
        ax.axhline(100 * df.test_error.iloc[0], color=line.get_color(), ls="--", lw=0.8)
        for _, row in df.iloc[[-1]].iterrows():
            ax.annotate(f"{row.compression:.1f}x", (row.params_remaining, 100 * row.test_error),
                        textcoords="offset points", xytext=(4, 4), fontsize=8)
    if network is not None:
        pub = published_table(network)
        first = next(iter(metrics.values()), None)
        if len(pub) and first is not None:
            total = first.params_total.iloc[0]
            ax.scatter(total / pub.compression, pub.error_pct, marker="x", color="k", zorder=5,
                       label="published (other methods)")
            for _, row in pub.iterrows():
                ax.annotate(row.method.split(" (")[0], (total / row.compression, row.error_pct), fontsize=7,
                            textcoords="offset points", xytext=(3, -9))
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("remaining parameters (log scale; weights + biases of conv and linear layers)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title or "Accuracy over pruning iterations")
    ax.legend(fontsize=8)
    return ax.figure


def plot_layer_sparsity(layers: pd.DataFrame, title: str = "") -> plt.Figure:
    """Remaining fraction of weights and alive units per layer, one line per iteration."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    df = layers.copy()
    df["layer"] = df["layer"].astype(str)
    df["alive_fraction"] = df.alive_units / df.units
    order = list(dict.fromkeys(df.layer))
    palette = sns.color_palette("viridis", df.iteration.nunique())
    for ax, column, label in ((axes[0], "remaining_fraction", "remaining fraction of weights"),
                              (axes[1], "alive_fraction", "alive units (fraction)")):
        sns.lineplot(df, x="layer", y=column, hue="iteration", palette=palette, marker="o", ax=ax,
                     sort=False, legend=ax is axes[1])
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=8)
        ax.set_yscale("log" if column == "remaining_fraction" else "linear")
        ax.set_ylabel(label)
    if axes[1].get_legend():
        sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1, 1), title="iteration")
    fig.suptitle(title or "Per-layer sparsity over iterations")
    fig.tight_layout()
    return fig


@torch.no_grad()
def layer_scores(model: nn.Module, batch: torch.Tensor, config: ReliefConfig | None = None,
                 graph: PruningGraph | None = None) -> dict[str, torch.Tensor]:
    """NNrelief scores (units x connections) of every layer on ``batch``, without pruning anything."""
    config = config or ReliefConfig()
    graph = graph or trace_model(model, tuple(batch.shape[1:]))
    accumulators, handles = {}, []
    for layer in graph.layers():
        m = layer.module
        acc = (ConvScoreAccumulator(m, config.conv_aggregation) if isinstance(m, nn.Conv2d)
               else LinearScoreAccumulator(m))
        accumulators[layer.name] = acc

        def hook(module, args, acc=acc):
            if isinstance(acc, ConvScoreAccumulator):
                acc.update(args[0], effective(module))
            else:
                acc.update(args[0])
        handles.append(m.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: acc.scores(effective(acc.layer), effective(acc.layer, "bias"))
            for name, acc in accumulators.items()}


def plot_score_distributions(scores: Mapping[str, torch.Tensor], title: str = "",
                             max_per_layer: int = 20000) -> plt.Figure:
    """Histograms of the non-zero scores of each layer, normalised by each unit's total (log axis); layers
    with more than ``max_per_layer`` scores are shown through a fixed random sample of that size."""
    frames = []
    g = torch.Generator().manual_seed(0)
    for name, s in scores.items():
        share = s.detach().cpu() / s.detach().cpu().sum(1, keepdim=True).clamp_min(1e-30)
        values = share[share > 0].flatten()
        if values.numel() > max_per_layer:
            values = values[torch.randperm(values.numel(), generator=g)[:max_per_layer]]
        values = values.double().numpy()
        frames.append(pd.DataFrame({"layer": name, "share of the unit's total score": values}))
    df = pd.concat(frames, ignore_index=True)
    g = sns.displot(df, x="share of the unit's total score", col="layer", col_wrap=min(4, len(scores)),
                    log_scale=True, bins=40, height=2.6, facet_kws={"sharey": False})
    g.figure.suptitle(title or "Distribution of importance scores per layer", y=1.03)
    return g.figure


def plot_alpha_rule(unit_scores: torch.Tensor, alpha: float, title: str = "") -> plt.Figure:
    """One unit: its sorted scores, the cumulative share, and where the alpha rule cuts."""
    s = unit_scores.double()
    keep = select(s.unsqueeze(0), alpha)[0]
    order = torch.argsort(s, descending=True)
    sorted_s, sorted_keep = s[order].numpy(), keep[order].numpy()
    cumulative = np.cumsum(sorted_s) / max(sorted_s.sum(), 1e-30)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    x = np.arange(1, len(sorted_s) + 1)
    ax.bar(x, sorted_s, color=np.where(sorted_keep, "tab:blue", "lightgray"), width=1.0)
    ax.set_xlabel("incoming connections, sorted by score")
    ax.set_ylabel("score")
    ax2 = ax.twinx()
    ax2.plot(x, cumulative, color="tab:red")
    ax2.axhline(alpha, color="tab:red", ls="--", lw=0.8)
    ax2.set_ylabel("cumulative share", color="tab:red")
    ax2.grid(False)
    ax.set_title(title or f"alpha = {alpha}: keeps {int(keep.sum())} of {len(s)} connections (blue)")
    return fig


def plot_input_pixel_map(model: nn.Module, shape: tuple[int, int] = (28, 28), title: str = "") -> plt.Figure:
    """For a model whose first layer is Linear on flattened pixels: surviving connections per input pixel."""
    first = next(m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    if not isinstance(first, nn.Linear) or first.in_features != shape[0] * shape[1]:
        raise ValueError(f"the input-pixel map needs a first Linear layer over {shape[0]}x{shape[1]} pixels")
    counts = (current_mask(first) != 0).sum(0).reshape(shape).cpu().numpy()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    im = ax.imshow(counts, cmap="magma")
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, label="surviving connections")
    ax.set_title(title or f"{int((counts > 0).sum())} of {counts.size} pixels still read")
    return fig
