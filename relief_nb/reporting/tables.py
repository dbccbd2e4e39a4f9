"""Results tables: a run's final row, every run of a results folder, the summary beside published numbers."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..experiments.config import ExperimentConfig
from ..experiments.presets import EXPERIMENTS
from ..experiments.run import Run
from .published import published_table

if TYPE_CHECKING:
    from ..core.selection import SelectionRule

__all__ = ["METHOD_LABELS", "alpha_sweep", "equal_compression_table", "error_at_compression", "final_row",
           "gather_results", "iteration_table", "markdown", "mean_std", "method_table", "published_crossings",
           "summary_rows", "summary_table"]

# method key of a run -> the name readers see in tables and figures
METHOD_LABELS = {"relief": "NNrelief", "magnitude_global": "magnitude (global)",
                 "magnitude_layer": "magnitude (per layer)", "random": "random", "snip": "SNIP",
                 "magact": "MagAct"}


def experiment_name(cfg: ExperimentConfig) -> str:
    """The preset an experiment config belongs to (by network and data set), else its model name."""
    return next((k for k, v in EXPERIMENTS.items() if (v.model, v.data.name) == (cfg.model, cfg.data.name)), cfg.model)


def final_row(name: str, run: Run) -> dict[str, Any]:
    """The paper-table row of one finished run: dense and final test error, size, compression, FLOPs."""
    m = run.metrics()
    first, last = m.iloc[0], m.iloc[-1]
    cfg = run.config
    return {
        "experiment": name, "network": cfg.model, "dataset": cfg.data.name,
        "method": METHOD_LABELS.get(cfg.method.name, cfg.method.name), "seed": cfg.seed,
        "alpha_conv": cfg.method.relief.alpha_conv, "alpha_fc": cfg.method.relief.alpha_fc,
        "synthetic": cfg.data.synthetic,
        "iterations": int(last.iteration),
        "baseline_error_pct": round(100 * first.test_error, 2), "error_pct": round(100 * last.test_error, 2),
        "params": int(last.params_remaining), "compression": round(float(last.compression), 2),
        "flops_reduction": round(float(last.flops_reduction), 2),
    }


def gather_results(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per finished run folder under ``runs_dir`` (notebooks and ``relief-nb run`` share it).

    A run folder is named after its hyperparameters, so each run appears once however many notebooks used it.
    """
    rows = []
    for config_path in sorted(Path(runs_dir).glob("*/seed_*/config.json")):
        folder = config_path.parent
        if not (folder / "metrics.csv").exists():
            continue
        cfg = ExperimentConfig.from_dict(json.loads(config_path.read_text()))
        row = final_row(experiment_name(cfg), Run.at(folder, cfg))
        row["run"] = f"{folder.parent.name}/{folder.name}"
        rows.append(row)
    return pd.DataFrame(rows)


def method_table(experiment: str, metrics: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Test error (%) of each method at every iteration, beside NNrelief's compression at that iteration."""
    frames = [pd.DataFrame({"experiment": experiment, "iteration": m.iteration, "method": METHOD_LABELS[method],
                            "test_error_pct": (100 * m.test_error).round(2)})
              for method, m in metrics.items()]
    wide = pd.concat(frames).pivot_table(index=["experiment", "iteration"], columns="method",
                                         values="test_error_pct").reset_index()
    wide.columns.name = None
    relief = metrics["relief"]
    return wide.assign(compression=relief.set_index("iteration").compression.round(2).reindex(wide.iteration).values)


def summary_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Our runs and the published points in one frame (network, dataset, method, seed, error_pct, compression,
    synthetic, source)."""

    ours = results.assign(source="relief_nb")
    pub = published_table()
    pub = pub[pub.network.isin(set(results.network))] if len(results) else pub
    pub = pub.assign(dataset="mnist", seed=pd.NA, synthetic=False, source="published",
                     method=pub.method.map(lambda m: f"published: {m}"))
    columns = ["network", "dataset", "method", "seed", "error_pct", "compression", "synthetic", "source"]
    return pd.concat([ours[columns], pub[columns]], ignore_index=True)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Every run's final row beside the published numbers, in the paper's layout, sorted by network."""
    rows = summary_rows(results).assign(
        method=lambda d: d.method.where(~d.synthetic.astype(bool), d.method + " (SYNTHETIC stand-in)"))
    return rows.drop(columns="source").sort_values(["network", "dataset", "compression"], kind="stable")


def alpha_sweep(scores, alphas=(0.5, 0.8, 0.9, 0.95, 0.99, 1.0), rule: SelectionRule = "paper") -> pd.DataFrame:
    """For one layer's scores (units x connections): connections kept and mass kept, per alpha."""
    from ..core.selection import select

    rows = []
    for alpha in alphas:
        keep = select(scores, alpha, rule)
        rows.append({"alpha": alpha, "kept_connections": int(keep.sum()),
                     "kept_fraction": round(float(keep.float().mean()), 4),
                     "kept_mass": round(float((scores * keep).sum() / scores.sum()), 4)})
    return pd.DataFrame(rows)


def _one_setting(agg: pd.DataFrame, caller: str, also: tuple[str, ...] = ()) -> None:
    settings = [c for c in agg.columns
                if c not in ("iteration", "n_seeds", *also) and not c.endswith(("_mean", "_std"))]
    if len(agg.drop_duplicates(settings)) > 1:
        raise ValueError(f"{caller} needs the aggregate of one setting; filter {settings} first")


def published_crossings(agg: pd.DataFrame, network: str, method: str = "relief") -> pd.DataFrame:
    """Where ``method``'s runs (its key or its label: ``"relief"`` or ``"NNrelief"``) cross each published
    method's compression on ``network``.

    ``agg`` is :func:`relief_nb.sweeps.sweep.aggregate`'s table (mean and std over seeds per iteration) of one setting.
    One row per published method (dense baseline aside): the first iteration whose mean compression reaches the
    published one, our mean test error there with its std over seeds, and the published error; iteration and
    errors are empty where our runs never reach that compression."""
    ours = agg[agg.method.isin({method, METHOD_LABELS.get(method, method)})].sort_values("iteration")
    _one_setting(ours, "published_crossings")
    rows = []
    for pub in published_table(network).itertuples():
        if pub.compression <= 1:
            continue
        reached = ours[ours.compression_mean >= pub.compression]
        hit = reached.iloc[0] if len(reached) else None
        rows.append({"published method": pub.method, "published compression": pub.compression,
                     "published error %": pub.error_pct,
                     "first iteration reaching it": int(hit.iteration) if hit is not None else None,
                     "our compression": hit.compression_mean if hit is not None else None,
                     "our error % (mean)": hit.test_error_pct_mean if hit is not None else None,
                     "our error % (std)": hit.test_error_pct_std if hit is not None else None,
                     "seeds": int(hit.n_seeds) if hit is not None else None})
    return pd.DataFrame(rows)


def mean_std(mean: float, std: float, digits: int, unit: str = "") -> str:
    """``"2.04 ± 0.05 %"``; the mean alone where std is NaN (one seed), empty where the mean is."""
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}") + unit


def iteration_table(agg: pd.DataFrame) -> pd.DataFrame:
    """One setting's aggregate (:func:`relief_nb.sweeps.sweep.aggregate`, every method), one row per iteration: each
    method's compression and test error % as "mean ± std" over seeds, and its ``seeds`` where some of its
    iterations have fewer than others (a sweep collected while runs are unfinished)."""
    _one_setting(agg, "iteration_table", also=("method",))
    out = pd.DataFrame(index=pd.Index(sorted(agg.iteration.dropna().unique()), name="iteration"))
    for method, m in agg.groupby("method", sort=False):
        m = m.set_index("iteration")
        out[f"{method} compression"] = m.apply(
            lambda r: mean_std(r.compression_mean, r.compression_std, 1, "x"), axis=1)
        out[f"{method} test error %"] = m.apply(
            lambda r: mean_std(r.test_error_pct_mean, r.test_error_pct_std, 2), axis=1)
        if m.n_seeds.nunique() > 1 or len(m) < len(out):
            out[f"{method} seeds"] = m.n_seeds.astype("Int64")
    return out.astype(object).fillna("").reset_index()


def markdown(df: pd.DataFrame, floats: str = "{:.2f}") -> str:
    """``df`` as a GitHub pipe table (pandas' ``to_markdown`` needs ``tabulate``, not worth a dependency)."""
    def cell(v: Any) -> str:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return ""
        return floats.format(v) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def error_at_compression(agg: pd.DataFrame, compressions: Sequence[float]) -> pd.DataFrame:
    """Each method's mean test error % at the given compressions, interpolated linearly in log compression
    between its iterations (NaN outside the range its runs covered): methods compared at equal compression,
    where iterations put them at different ones. ``agg``: one setting's aggregate, every method."""
    import numpy as np

    _one_setting(agg, "error_at_compression", also=("method",))
    rows = {}
    for method, m in agg.groupby("method", sort=False):
        m = m.sort_values("compression_mean")
        x, y = np.log(m.compression_mean.to_numpy()), m.test_error_pct_mean.to_numpy()
        targets = np.log(np.asarray(compressions, dtype=float))
        rows[method] = np.where((targets >= x.min()) & (targets <= x.max()), np.interp(targets, x, y), np.nan)
    return pd.DataFrame(rows, index=pd.Index(list(compressions), name="compression")).T


def equal_compression_table(agg: pd.DataFrame, compressions: Sequence[float], label: str = "method") -> pd.DataFrame:
    """:func:`error_at_compression` for reading: columns ``"50x"`` ..., only the compressions some method reached,
    the methods in a ``label`` column."""
    at = error_at_compression(agg, compressions)
    at = at.loc[:, at.notna().any()]
    return at.rename(columns=lambda c: f"{c:g}x").reset_index(names=label)
