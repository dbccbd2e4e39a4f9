"""Compare experiments that are not one grid: any run folders, each under a label of yours.

A sweep compares the points of a grid (:mod:`relief_nb.sweeps.sweep`); settings that do not form a product (fine-tuning
at a small constant rate against learning-rate rewinding against an alpha schedule) are separate experiments.
:func:`aggregate_experiments` reads each experiment folder's ``seed_*`` runs into the same aggregate a sweep
writes (mean and std over seeds per iteration), so :func:`relief_nb.reporting.tables.iteration_table` and
:func:`relief_nb.reporting.tables.error_at_compression` compare them::

    relief-nb compare paper=results/runs/lenet300-100_mnist_ac0.9_af0.95_642e0c41 \\
        finetune=results/runs/lenet300-100_mnist_ac0.9_af0.95_4f7138f8 --iterations 5 10 20
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..experiments.run import Run

__all__ = ["add_compare_command", "aggregate_experiments", "compare_report"]


def _seed_rows(label: str, folder: Path) -> pd.DataFrame:
    from .sweep import metric_rows

    run = Run.at(folder)  # metrics(): up to the last iteration the run's own stopping rules ask for
    return metric_rows(run.metrics()).assign(
        experiment=run.config.model, network=run.config.model, dataset=run.config.data.name, method=label,
        synthetic=run.config.data.synthetic, seed=folder.name, run=f"{folder.parent.name}/{folder.name}",
        status="cached", error=None)


def aggregate_experiments(experiments: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """``{label: experiment folder}`` (``results/runs/<name>``, holding ``seed_*`` runs; a single ``seed_k``
    folder counts alone) -> :func:`relief_nb.sweeps.sweep.aggregate`'s table with the labels as ``method``. Unfinished
    runs count with the iterations they have; ``n_seeds`` says how many seeds each mean has."""
    from .report import aggregate

    frames = []
    for label, folder in experiments.items():
        folder = Path(folder)
        seeds = [folder] if (folder / "config.json").exists() else sorted(
            p.parent for p in folder.glob("seed_*/config.json"))
        seeds = [s for s in seeds if (s / "metrics.csv").exists()]
        if not seeds:
            raise ValueError(f"{label}={folder}: no run with metrics there; give an experiment folder "
                             "(results/runs/<name>, holding seed_*/) or one seed_* folder")
        frames += [_seed_rows(label, s) for s in seeds]
    df = pd.concat(frames, ignore_index=True)
    if df.network.nunique() > 1:
        raise ValueError(f"the experiments train different networks ({sorted(set(df.network))}); compare one")
    order = {label: i for i, label in enumerate(experiments)}
    return aggregate(df).sort_values("method", key=lambda m: m.map(order), kind="stable").reset_index(drop=True)


def compare_report(experiments: Mapping[str, str | os.PathLike], iterations: Sequence[int] | None = None,
                   compressions: Sequence[float] | None = None) -> str:
    """Markdown: each experiment's compression and test error (mean ± std over seeds) at ``iterations`` (default:
    all), then their error at equal ``compressions`` (default: the sweep report's, where any reaches them)."""
    from ..reporting.tables import equal_compression_table, iteration_table, markdown
    from .report import COMPARE_AT

    agg = aggregate_experiments(experiments)
    table = iteration_table(agg)
    if iterations is not None:
        table = table[table.iteration.isin(list(iterations))]
    at = equal_compression_table(agg, compressions or COMPARE_AT, label="experiment")
    seeds = ", ".join(f"{label}: {int(n)}" for label, n in agg.groupby("method", sort=False).n_seeds.max().items())
    return (f"Seeds per experiment: {seeds}.\n\n{markdown(table)}\n\nMean test error % at equal compression "
            f"(interpolated in log compression between iterations; empty: outside an experiment's range):\n\n"
            f"{markdown(at)}\n")


def _cmd_compare(args: argparse.Namespace) -> int:
    experiments: dict[str, Any] = {}
    for item in args.experiments:
        label, sep, folder = item.partition("=")
        if not sep:  # a bare folder is labelled by its name (its experiment's, for a seed_* folder)
            path = Path(item.rstrip("/"))
            label, folder = (path.parent.name if path.name.startswith("seed_") else path.name), item
        if not label or not folder:
            raise ValueError(f"{item!r}: write FOLDER or LABEL=FOLDER, e.g. paper=results/runs/<name>")
        if label in experiments:
            raise ValueError(f"two experiments are labelled {label!r}: write LABEL=FOLDER for each")
        experiments[label] = folder
    print(compare_report(experiments, args.iterations, args.at), end="")
    return 0


def add_compare_command(sub: Any) -> None:
    """Register ``relief-nb compare`` on the CLI's subparsers."""
    p = sub.add_parser("compare", help="compare experiment folders: iteration tables, error at equal compression",
                       description="Compare run folders that are not one grid (e.g. options beyond the paper "
                       "against its setting): mean ± std over each folder's seeds at every iteration, and the "
                       "error at equal compression, as markdown. Nothing is trained.")
    p.add_argument("experiments", nargs="+", metavar="[LABEL=]FOLDER",
                   help="results/runs/<name> (its seed_* runs) or one seed_* folder; labelled by its name unless "
                        "LABEL= is given")
    p.add_argument("--iterations", nargs="+", type=int, help="only these iterations in the first table")
    p.add_argument("--at", nargs="+", type=float, help="compressions of the second table (default 2x to 500x)")
    p.set_defaults(func=_cmd_compare)
