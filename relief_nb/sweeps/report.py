"""What a sweep shows: the aggregate over seeds (:func:`aggregate`), its figure (:func:`plot_sweep`), ``report.md``
(:func:`sweep_report`) and the files a saved sweep writes (:func:`save_sweep`)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..common import paths
from ..common.files import atomic_write
from ..reporting.tables import METHOD_LABELS

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

__all__ = ["COMPARE_AT", "METRIC_COLUMNS", "aggregate", "plot_sweep", "save_sweep", "sweep_report"]

# per-iteration measurements of the tidy table; every other column except the per-run ones is a grid coordinate
METRIC_COLUMNS = ("iteration", "compression", "flops_reduction", "test_error_pct", "val_error_pct",
                  "params_remaining", "wall_time_s")
_PER_RUN_COLUMNS = ("seed", "run", "status", "error")
# compressions at which report.md compares the methods (those a network's runs reach)
COMPARE_AT = (2, 5, 10, 20, 50, 100, 200, 500)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of test error % and compression (and FLOPs reduction, val error %) per
    experiment, method, alphas, other grid settings and iteration; ``n_seeds`` counts the seeds averaged.

    Failed runs (and runs not started) are left out; a run collected unfinished counts at the iterations it has.
    Works on :func:`run_sweep`'s table or on ``sweep.csv`` read back."""
    if "wall_time_s" not in df:  # a sweep.csv written before wall time was a column
        df = df.assign(wall_time_s=float("nan"))
    ok = df[df.status != "failed"].dropna(subset=["iteration"])
    keys = [c for c in df.columns if c not in METRIC_COLUMNS and c not in _PER_RUN_COLUMNS and c != "folder"]
    keys.append("iteration")
    g = ok.groupby(keys, dropna=False, sort=True)
    out = g.agg(n_seeds=("seed", "nunique"),
                test_error_pct_mean=("test_error_pct", "mean"), test_error_pct_std=("test_error_pct", "std"),
                compression_mean=("compression", "mean"), compression_std=("compression", "std"),
                flops_reduction_mean=("flops_reduction", "mean"), val_error_pct_mean=("val_error_pct", "mean"),
                wall_time_s_mean=("wall_time_s", "mean"))
    return out.reset_index()


def _panel_keys(agg: pd.DataFrame) -> list[str]:
    fixed = {"experiment", "network", "dataset", "method", "synthetic", "iteration", "n_seeds"}
    return [c for c in agg.columns if c not in fixed and not c.endswith(("_mean", "_std"))]


def plot_sweep(agg: pd.DataFrame, experiment: str | None = None, mark: str | None = None) -> plt.Figure:
    """Test error (%) against compression for one experiment of an aggregated sweep (:func:`aggregate`).

    One panel per setting of the alphas (and other varying settings), one line per method (mean over seeds)
    with a band of +- one std of the error; baselines are pruned to NNrelief's sparsity, so at each iteration
    they sit at NNrelief's compression and the panel compares the methods at matched compression. The
    published points of the network are grey markers in the legend. ``mark`` is stamped across every panel.
    """
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib import ticker

    from ..reporting.style import (
        _finish,
        _fmt_pct,
        _fmt_times,
        _log_ticks,
        _method_style,
        _published_points,
        display_name,
    )

    experiment = experiment or str(agg.experiment.iloc[0])
    sub = agg[agg.experiment == experiment]
    if sub.empty:
        raise ValueError(f"no rows of experiment {experiment!r}; experiments: {sorted(set(agg.experiment))}")
    network, dataset = str(sub.network.iloc[0]), str(sub.dataset.iloc[0])
    panel_keys = [k for k in _panel_keys(sub) if sub[k].nunique(dropna=False) > 1] or _panel_keys(sub)[:2]
    panels = list(sub.groupby(panel_keys, dropna=False, sort=True)) if panel_keys else [((), sub)]
    ncols = 2 if len(panels) == 4 else min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.6 * ncols, 9), 3.6 * nrows + 2.2), squeeze=False,
                             sharey=True, layout="constrained")
    used = list(axes.flat[: len(panels)])
    for ax in axes.flat[len(panels):]:
        ax.remove()
    styles: dict[str, tuple[str, str]] = {}
    handles: dict[str, Any] = {}
    for ax, (values, frame) in zip(used, panels):
        values = values if isinstance(values, tuple) else (values,)
        for method, m in frame.groupby("method", sort=False):
            m = m.sort_values("iteration")
            color, marker = _method_style(method, styles)
            x, y = m.compression_mean.to_numpy(), m.test_error_pct_mean.to_numpy()
            std = np.nan_to_num(m.test_error_pct_std.to_numpy())
            n = int(m.n_seeds.max())
            line = ax.plot(x, y, color=color, marker=marker, ms=4, lw=1.4,
                           label=f"{method} (mean of {n} seed{'s' if n != 1 else ''} +- std)")[0]
            ax.fill_between(x, y - std, y + std, color=color, alpha=0.18, lw=0)
            handles.setdefault(line.get_label(), line)
        _published_points(ax, network, lambda c: c)
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, _fmt_times)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(_fmt_pct))
        ax.set_title(", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                               for k, v in zip(panel_keys, values)), fontsize=10)
        ax.set_xlabel("compression (log scale)")
    errors = sub.test_error_pct_mean[sub.test_error_pct_mean > 0]
    log_y = len(errors) > 0 and errors.max() > 4 * errors.min()  # a far worse method: log keeps the rest readable
    for ax in used if log_y else ():
        ax.set_yscale("log")
        _log_ticks(ax.yaxis, _fmt_pct, 8)
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    for row in axes[:, :1]:
        if row[0] in used:
            row[0].set_ylabel(f"test error (%{', log scale' if log_y else ''})")
    data_name = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(dataset, dataset)
    fig.suptitle(f"{display_name(network)} on {data_name}: test error vs compression\n"
                 "(baselines pruned to NNrelief's sparsity at every iteration; band: +- std over seeds)", fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2, fontsize=8)
    return _finish(fig, mark, used)


def _wall_times(df: pd.DataFrame) -> pd.DataFrame:
    """Per method: runs, their summed wall time (training and evaluation, every iteration) and its range."""
    ok = df[df.status != "failed"].dropna(subset=["iteration"])
    per_run = ok.groupby(["method", "run"], sort=False).agg(seconds=("wall_time_s", "sum"),
                                                            status=("status", "first")).reset_index()
    rows = []
    for method, g in per_run.groupby("method", sort=False):
        unfinished = int(g.status.eq("partial").sum())
        rows.append({"method": method, "runs": len(g), "unfinished": unfinished,
                     "wall time in all": f"{g.seconds.sum():,.0f} s",
                     "per run": f"{g.seconds.min():,.0f}-{g.seconds.max():,.0f} s"})
    return pd.DataFrame(rows)


def sweep_report(df: pd.DataFrame) -> str:
    """Markdown of a sweep's table: per experiment and setting, each method's compression and test error (mean ±
    std over seeds) at every iteration, where NNrelief's mean compression first reaches each published point
    of the network, and the wall time of the runs. What ``report.md`` of a saved sweep holds."""
    from ..reporting.published import published_table
    from ..reporting.tables import equal_compression_table, iteration_table, markdown, mean_std, published_crossings

    agg = aggregate(df)
    timed = "wall_time_s" in df and bool(df.wall_time_s.notna().any())  # older sweep.csv files have no wall time
    parts = []
    if df.synthetic.astype(bool).any():
        parts.append("**Synthetic stand-in data: these numbers are checks, not results.**\n")
    not_counted = df[df.status.isin(["failed", "not started"])].drop_duplicates("run")
    for row in not_counted.itertuples():
        parts.append(f"- not counted: {row.run} ({row.status}{f': {row.error}' if row.error else ''})")
    for run, last in df[df.status == "partial"].groupby("run", sort=True).iteration.max().items():
        parts.append(f"- unfinished: {run} (iterations 0-{last} so far; later iterations average fewer seeds)")
    keys = ["experiment", *_panel_keys(agg)]
    for values, sub in agg.groupby(keys, dropna=False, sort=True):
        setting = ", ".join(f"{k} = {v}" for k, v in zip(keys[1:], values[1:]) if not pd.isna(v))
        parts.append(f"\n## {values[0]}{f' ({setting})' if setting else ''}\n")
        parts.append("Mean ± std over seeds of each iteration (iteration 0: the trained dense network).\n")
        parts.append(markdown(iteration_table(sub)))
        network = str(sub.network.iloc[0])
        relief = sub[sub.method == METHOD_LABELS["relief"]]
        if len(published_table(network)) and len(relief):
            crossings = published_crossings(relief, network)
            table = pd.DataFrame({
                "published method": crossings["published method"],
                "published": [f"{c:g}x at {e:.2f} %" for c, e in zip(crossings["published compression"],
                                                                    crossings["published error %"])],
                "first iteration at or above": crossings["first iteration reaching it"].astype("Int64"),
                "NNrelief there": [mean_std(e, s_, 2, " %") if not pd.isna(c) else "never reached"
                                   for c, e, s_ in zip(crossings["our compression"], crossings["our error % (mean)"],
                                                       crossings["our error % (std)"])],
                "its compression": [f"{c:.1f}x" if not pd.isna(c) else "" for c in crossings["our compression"]]})
            parts.append("\nWhere NNrelief's mean compression first reaches each published point:\n")
            parts.append(markdown(table))
        if sub.method.nunique() > 1:
            at = equal_compression_table(sub, COMPARE_AT)
            if at.shape[1] > 1:
                parts.append("\nMean test error % at equal compression (interpolated in log compression between "
                             "iterations; empty: outside a method's range):\n")
                parts.append(markdown(at))
        if timed:
            runs = df.merge(pd.DataFrame([values], columns=keys), on=keys)
            parts.append("\nWall time (training and evaluation of every iteration, summed per run):\n")
            parts.append(markdown(_wall_times(runs)))
    return "\n".join(parts).strip() + "\n"


def save_sweep(df: pd.DataFrame, folder: str | os.PathLike, mark: str | None = None) -> Path:
    """Write ``sweep.csv``, ``aggregate.csv``, ``report.md`` (:func:`sweep_report`) and ``<experiment>.png`` (one
    figure per experiment) into ``folder``, each file atomically. A sweep without one finished iteration (every run
    failed or not started) never replaces the files of an earlier one: they are kept, with a warning."""
    import matplotlib.pyplot as plt

    from ..reporting.style import save_figure

    folder = Path(folder)
    if not df.iteration.notna().any() and (folder / "report.md").exists():
        warnings.warn(f"kept the existing tables and report in {folder}: this sweep has no finished iteration to "
                      "replace them with", stacklevel=2)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "sweep.csv", df.to_csv(index=False))
    agg = aggregate(df)
    atomic_write(folder / "aggregate.csv", agg.to_csv(index=False))
    atomic_write(folder / "report.md", sweep_report(df))
    for experiment in agg.experiment.unique():
        fig = plot_sweep(agg, experiment, mark=mark)
        save_figure(fig, folder, paths.safe_name(str(experiment), "experiment name"))
        plt.close(fig)
    return folder
