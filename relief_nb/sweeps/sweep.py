"""Sweeps: a grid of experiments run as Dask tasks, gathered into one tidy table, aggregated over seeds.

A grid is experiments (preset names) x ``alpha_conv`` x ``alpha_fc`` x seeds x methods, times any other
:class:`~relief_nb.experiment.ExperimentConfig` setting given as a list in ``params`` (a list is an axis, a scalar
or a tuple one value for every run; ``*_milestones`` take a list of ints as one value). Every point is one run
folder (:class:`~relief_nb.experiment.Run`, named by its hyperparameters), so the design leans on what runs
already guarantee:

* **one Dask task per run**, which executes or resumes the run folder and returns its metrics. A baseline
  (``magnitude_global``, ``magnitude_layer``, ``random``) is submitted with its NNrelief reference run's future as
  an argument, so Dask starts it once the reference has finished (a task dependency, no polling); a baseline whose
  reference is missing from the grid gets it added;
* **nothing twice**: a run whose ``checkpoint.pt`` says it is done is read back, not submitted; when every run
  is done no cluster is even started;
* **fault tolerance**: a worker killed mid-run makes Dask reschedule the task (``retries`` also covers
  transient exceptions); the run resumes from the checkpoint written after every epoch and ends with the
  metrics of an uninterrupted run. A run that fails for a real reason is reported (``status='failed'`` and the
  ``error``) and the others go on; its baselines fail with it;
* **one thread per task**: ``torch.set_num_threads(1)`` in every task, and the default
  :class:`distributed.LocalCluster` has one single-threaded process per core (several processes each running
  several OpenMP threads on a 2-core machine ran 60x slower);
* **glibc's allocator as torch expects it**: Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``,
  which also freezes glibc's mmap threshold, so every tensor above 128 KiB is mmap-ed and unmapped anew. A
  LeNet-300-100 run then spent as long in the kernel as in torch (10.4 s instead of 5.3 s, 9 s of it system
  time); every task restores glibc's defaults (:func:`_restore_malloc`), whichever cluster started the worker.

Schedulers: ``scheduler=None`` uses ``$DASK_SCHEDULER_ADDRESS`` when set, else a LocalCluster sized for the
machine; ``scheduler='tcp://host:8786'`` connects to a running one; a ``Client`` or a cluster object (e.g. a
dask-jobqueue ``SLURMCluster``) is used as it is. Workers must see ``results_dir`` and ``data_dir`` at the same
paths (a shared file system). On SLURM::

    from dask_jobqueue import SLURMCluster
    from relief_nb.sweep import run_sweep

    cluster = SLURMCluster(cores=1, processes=1, memory="4GB", walltime="02:00:00",
                           job_script_prologue=["source /path/to/relief_nb/.venv/bin/activate"])
    cluster.scale(jobs=16)  # 16 single-core jobs, each one worker running one run at a time
    df = run_sweep("lenet300-mnist", alpha_fc=[0.8, 0.9, 0.95, 0.99], seeds=[0, 1, 2],
                   methods=["relief", "magnitude_global", "magnitude_layer", "random"], profile="cpu",
                   scheduler=cluster, results_dir="/shared/results", data_dir="/shared/data")

Outputs (``save=True``, the CLI): ``<results>/sweeps/<name>/`` (``<results>/smoke/sweeps/<name>/`` for the smoke
profile) holds ``sweep.csv`` (:func:`run_sweep`'s table), ``aggregate.csv`` (:func:`aggregate`), ``report.md``
(:func:`sweep_report`) and one figure ``<experiment>.png`` per experiment (:func:`plot_sweep`). ``relief-nb sweep
GRID --collect`` writes them from what the folders hold, without running anything (a sweep still running or
stopped). The runs themselves live in the shared runs folder
(:func:`relief_nb.paths.runs_folder`), where notebooks and ``relief-nb run`` find and reuse them.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..common import paths
from ..experiments.run import ExperimentConfig, Run, override
from ..reporting.marks import SMOKE_MARK
from ..reporting.tables import METHOD_LABELS

if TYPE_CHECKING:
    import matplotlib.pyplot as plt
    from distributed import Client

__all__ = ["GRID_KEYS", "SweepRun", "add_sweep_command", "aggregate", "expand_grid", "load_grid", "plot_sweep",
           "run_done", "run_sweep", "sweep_report"]

SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
# keys of a grid, in a TOML file and as run_sweep's arguments (the CLI's options spell them with dashes)
GRID_KEYS = ("experiment", "alpha_conv", "alpha_fc", "seeds", "methods", "profile", "params", "name", "device",
             "retries")
# per-iteration measurements of the tidy table; every other column except the per-run ones is a grid coordinate
METRIC_COLUMNS = ("iteration", "compression", "flops_reduction", "test_error_pct", "val_error_pct",
                  "params_remaining", "wall_time_s")
_PER_RUN_COLUMNS = ("seed", "run", "status", "error")
# compressions at which report.md compares the methods (those a network's runs reach)
COMPARE_AT = (2, 5, 10, 20, 50, 100, 200, 500)


@dataclass(frozen=True)
class SweepRun:
    """One point of a grid: its coordinates (what the table shows), its config (``None`` if it could not be
    built; ``error`` says why) and, for a baseline, the run name of its NNrelief reference."""

    coords: dict[str, Any]
    config: ExperimentConfig | None
    error: str | None = None
    reference: str | None = field(default=None)
    name: str = ""  # the run folder's name (it hashes the data read); "invalid:<hash>" for a point with no config

    def __post_init__(self) -> None:
        if not self.name:
            digest = hashlib.sha1(json.dumps(self.coords, sort_keys=True, default=str).encode()).hexdigest()[:8]
            object.__setattr__(self, "name", f"invalid:{digest}")


# ---------------------------------------------------------------------------------------------- the grid
def _as_list(value: Any) -> list[Any]:
    """A list (or other non-string iterable but a tuple) is an axis; anything else is one value."""
    if value is None:
        return [None]
    if isinstance(value, (str, tuple)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _param_axis(key: str, value: Any) -> list[Any]:
    """``params`` values: a list is an axis, except that ``*_milestones`` take a list of ints as one value
    (a list of lists is then the axis); the string ``"None"`` (TOML has no null) stands for None."""
    if key.endswith("milestones") and isinstance(value, list) and all(isinstance(v, int) for v in value):
        value = tuple(value)
    values = _as_list(value)
    return [tuple(v) if key.endswith("milestones") and isinstance(v, list) else None if v == "None" else v
            for v in values]


def _data_present(dataset: str, data_dir: Path) -> bool:
    from ..data.datasets import DATASETS

    return (data_dir / DATASETS[dataset].folder).exists()


def expand_grid(experiment: str | Sequence[str], alpha_conv: float | Sequence[float] | None = None,
                alpha_fc: float | Sequence[float] | None = None, seeds: int | Sequence[int] = (0,),
                methods: str | Sequence[str] = ("relief",), profile: str = "cpu",
                params: Mapping[str, Any] | None = None, data_dir: str | os.PathLike | None = None) -> list[SweepRun]:
    """Every run of the grid, NNrelief references first. ``None`` alphas keep the preset's value.

    A point whose config is invalid (e.g. ``alpha_fc=1.5``) becomes a :class:`SweepRun` with ``config=None``
    and its error, reported like a failed run. With the ``smoke`` profile and the data set absent from
    ``data_dir``, runs use the synthetic stand-in (as notebooks do) and say so.
    """
    from ..experiments.presets import EXPERIMENTS, PROFILES, experiment_config
    from ..pruning.methods import list_methods

    unknown_names = [e for e in _as_list(experiment) if e not in EXPERIMENTS]
    if unknown_names or profile not in PROFILES:
        raise KeyError(f"unknown experiment(s) {unknown_names} or profile {profile!r}; experiments: "
                       f"{', '.join(sorted(EXPERIMENTS))}; profiles: {', '.join(PROFILES)}")
    data_path = Path(data_dir) if data_dir is not None else paths.default_data_dir()
    # seeds and methods are always axes: a tuple of them is several values, not one
    methods = list(methods) if isinstance(methods, tuple) else _as_list(methods)
    seeds = list(seeds) if isinstance(seeds, tuple) else seeds
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(list_methods())}")
    if "relief" not in methods:  # baselines need their reference; its rows are in the table too
        methods = ["relief", *methods]
    methods = ["relief"] + [m for m in dict.fromkeys(methods) if m != "relief"]
    axes = {k: _param_axis(k, v) for k, v in (params or {}).items()}
    runs: dict[str, SweepRun] = {}
    for name in _as_list(experiment):
        for ac, af, seed, *extra in itertools.product(_as_list(alpha_conv), _as_list(alpha_fc), _as_list(seeds),
                                                      *axes.values()):
            overrides = dict(zip(axes, extra))
            varying = {k: v for k, v in overrides.items() if len(axes[k]) > 1}
            fixed = {"alpha_conv": ac, "alpha_fc": af, "seed": seed}
            overrides.update({k: v for k, v in fixed.items() if v is not None})
            reference: SweepRun | None = None
            for method in methods:
                coords = {"experiment": name, "method": method, "alpha_conv": ac, "alpha_fc": af, "seed": seed,
                          **varying}
                try:
                    if method != "relief" and (reference is None or reference.config is None):
                        raise ValueError(f"its NNrelief reference run could not be built "
                                         f"({reference.error if reference else 'missing'})")
                    cfg = experiment_config(name, profile, **overrides)
                    if profile == "smoke" and not cfg.data.synthetic and not _data_present(cfg.data.name, data_path):
                        warnings.warn(f"{cfg.data.name} is not in {data_path}: the smoke sweep runs {name} on a "
                                      "SYNTHETIC stand-in (its numbers are not results)", stacklevel=2)
                        cfg = override(cfg, synthetic=True)
                    relief = cfg.method.relief
                    coords.update(alpha_conv=relief.alpha_conv, alpha_fc=relief.alpha_fc, seed=cfg.seed)
                    if method != "relief" and reference is not None:
                        cfg = override(cfg, method=method, reference=reference.name.rsplit("/", 1)[0])
                    run = SweepRun(coords, cfg, reference=reference.name if reference else None,
                                   name=Run(cfg, data_dir=data_path, device="cpu", progress=False).run_name())
                except Exception as err:  # an invalid point is reported, the grid goes on
                    run = SweepRun(coords, None, f"{type(err).__name__}: {err}",
                                   reference=reference.name if reference else None)
                if method == "relief":
                    reference = run
                runs.setdefault(run.name, run)
    return list(runs.values())


def load_grid(path: str | os.PathLike) -> dict[str, Any]:
    """A grid from a TOML file: the keys of :data:`GRID_KEYS` (``experiment``, ``alpha_fc``, ``seeds``,
    ``methods``, ``profile``, a ``[params]`` table, ...); ``name`` defaults to the file's stem."""
    import tomllib

    with open(path, "rb") as f:
        grid = tomllib.load(f)
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown grid key(s) {unknown}; valid keys: {', '.join(GRID_KEYS)}")
    grid.setdefault("name", Path(path).stem)
    return grid


# ---------------------------------------------------------------------------------------------- one task
def run_done(folder: str | os.PathLike) -> bool:
    """Whether the run stored in ``folder`` has made every iteration its config asks for (see
    :meth:`Run.finished`; a folder without ``config.json`` is not done)."""
    folder = Path(folder)
    return (folder / "config.json").exists() and Run.at(folder).finished()


def execute_run(config: ExperimentConfig, runs_dir: str | os.PathLike, data_dir: str | os.PathLike,
                device: str = "auto", threads: int | None = 1, reference: Any = None) -> pd.DataFrame:
    """Execute (or resume) one run folder and return its metrics: the body of every Dask task.

    ``threads`` sets torch's intra-op threads for the call (1 on a cluster of one process per core);
    ``reference`` is the NNrelief reference's result, passed only so that Dask orders the tasks."""
    import torch

    _restore_malloc()
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return Run(config, runs_dir, data_dir, device, progress=False).run()
    finally:
        torch.set_num_threads(previous)


def _restore_malloc() -> None:
    """Undo ``MALLOC_TRIM_THRESHOLD_`` (set by Dask's nanny) in this process: trim above 128 MiB and let large
    blocks come from the heap below 32 MiB, as glibc's dynamic threshold would. No-op off glibc or when unset."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:  # mallopt has no Python binding; ctypes is the only way to reach it
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other libcs do not read the variable
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_trim_threshold, 128 << 20)
    libc.mallopt(m_mmap_threshold, 32 << 20)


# ---------------------------------------------------------------------------------------------- the client
def _connect(scheduler: Any) -> tuple[Client, list[Any]]:
    """A client for ``scheduler`` and what to close afterwards, in order (what this call made, nothing else)."""
    from distributed import Client, LocalCluster

    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if isinstance(scheduler, Client):
        return scheduler, []
    if scheduler is None:
        cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
        return client, [client, cluster]
    client = Client(scheduler)  # an address, or a cluster object (LocalCluster, SLURMCluster, ...)
    return client, [client]


def _dashboard(client: Client) -> str | None:
    try:
        has_dashboard = "dashboard" in client.scheduler_info().get("services", {})
    except Exception:
        has_dashboard = False
    return client.dashboard_link if has_dashboard else None


def _rows(run: SweepRun, status: str, metrics: pd.DataFrame | None, folder: Path,
          error: str | None = None) -> pd.DataFrame:
    cfg = run.config
    head = {**run.coords, "network": cfg.model if cfg else None, "dataset": cfg.data.name if cfg else None,
            "synthetic": bool(cfg.data.synthetic) if cfg else False}
    head["method"] = METHOD_LABELS.get(run.coords["method"], run.coords["method"])
    tail = {"run": run.name, "folder": str(folder / run.name) if cfg else None, "status": status, "error": error}
    if metrics is None or metrics.empty:
        return pd.DataFrame([{**head, **{c: float("nan") for c in METRIC_COLUMNS}, **tail}])
    return metric_rows(metrics).assign(**head, **tail)


def metric_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """A run's ``metrics.csv`` as the sweep table's measurements (:data:`METRIC_COLUMNS`, errors in %)."""
    return pd.DataFrame({"iteration": metrics.iteration, "compression": metrics.compression,
                         "flops_reduction": metrics.flops_reduction, "test_error_pct": 100 * metrics.test_error,
                         "val_error_pct": 100 * (1 - metrics.val_acc), "params_remaining": metrics.params_remaining,
                         "wall_time_s": metrics.get("wall_time_s", float("nan"))})


def _order(df: pd.DataFrame) -> pd.DataFrame:
    first = ["experiment", "network", "dataset", "method", "alpha_conv", "alpha_fc", "seed"]
    rest = [c for c in df.columns if c not in first and c not in METRIC_COLUMNS and c not in
            ("synthetic", "run", "folder", "status", "error")]
    return df[[*first, *rest, *METRIC_COLUMNS, "synthetic", "run", "folder", "status", "error"]]


def _default_name(experiments: list[str], grid: dict[str, Any]) -> str:
    digest = hashlib.sha1(json.dumps(grid, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{'+'.join(experiments)}_{digest}"


def run_sweep(experiment: str | Sequence[str], alpha_conv: float | Sequence[float] | None = None,
              alpha_fc: float | Sequence[float] | None = None, seeds: int | Sequence[int] = (0,),
              methods: str | Sequence[str] = ("relief",), profile: str = "cpu",
              params: Mapping[str, Any] | None = None, *, scheduler: Any = None,
              results_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
              device: str = "auto", retries: int = 2, progress: bool = True, name: str | None = None,
              save: bool = False, execute: bool = True) -> pd.DataFrame:
    """Run a grid (see :func:`expand_grid` and the module docstring) on Dask; return the tidy table.

    One row per run and iteration: experiment, network, dataset, method (readable label), alpha_conv, alpha_fc,
    seed, any other varying setting, iteration, compression, flops_reduction, test_error_pct, val_error_pct,
    params_remaining, wall_time_s (of the iteration's training and evaluation), synthetic, run (folder name),
    folder, status (``done``: ran now, ``cached``: finished before, ``failed``: one row with the ``error``).

    ``execute=False`` runs nothing and starts no cluster: it collects what the folders hold now, an unfinished
    run with the iterations it has finished (status ``partial``, or ``not started``: one row without metrics),
    so the tables and figures of a sweep still running, or stopped, can be read. ``df.attrs`` holds
    ``submitted`` (tasks sent to Dask), ``failed``, ``scheduler`` (its address, None if nothing was submitted)
    and, with ``save``, ``folder`` (where :func:`save_sweep` wrote its files).
    """
    results = Path(results_dir or paths.default_results_dir()).resolve()
    data = Path(data_dir or paths.default_data_dir()).resolve()
    if name is not None:  # refused before anything runs or is written
        paths.sweep_folder(results, profile, name)
    runs_dir = paths.runs_folder(results, profile)
    experiments = _as_list(experiment)
    runs = expand_grid(experiments, alpha_conv, alpha_fc, seeds, methods, profile, params, data)
    frames: dict[str, pd.DataFrame] = {}
    todo: list[SweepRun] = []
    for run in runs:
        if run.config is None:
            frames[run.name] = _rows(run, "failed", None, runs_dir, run.error)
        elif (stored := Run(run.config, runs_dir, data, device="cpu", progress=False)).folder and stored.finished():
            frames[run.name] = _rows(run, "cached", stored.metrics(), runs_dir)  # .folder: a 0.1 folder migrated
        elif execute:
            todo.append(run)
        else:
            partial = stored.metrics()
            frames[run.name] = _rows(run, "partial" if len(partial) else "not started", partial, runs_dir)
    address = None
    if todo:
        address = _submit_all(todo, frames, runs_dir, data, device, retries, progress, scheduler)
    df = _order(pd.concat([frames[r.name] for r in runs], ignore_index=True))
    df["iteration"] = df.iteration.astype("Int64")  # NA on a failed run's row
    failed = int(df.drop_duplicates("run").status.eq("failed").sum())
    df.attrs.update(submitted=len(todo), failed=failed, scheduler=address, mark=_mark(df, profile))
    if save:
        grid = dict(experiment=experiments, alpha_conv=alpha_conv, alpha_fc=alpha_fc, seeds=seeds, methods=methods,
                    profile=profile, params=dict(params or {}))
        folder = save_sweep(df, paths.sweep_folder(results, profile, name if name is not None else
                                                              _default_name(experiments, grid)),
                            mark=df.attrs["mark"])
        df.attrs["folder"] = str(folder)
    return df


def _submit_all(todo: list[SweepRun], frames: dict[str, pd.DataFrame], runs_dir: Path, data: Path, device: str,
                retries: int, progress: bool, scheduler: Any) -> str:
    """Submit every run not yet done (baselines depending on their reference's future), collect as they finish."""
    from distributed import as_completed

    client, owned = _connect(scheduler)
    try:
        link = _dashboard(client)
        if progress:
            print(f"sweep: {len(todo)} run(s) on {client.scheduler.address}"
                  f"{f', dashboard {link}' if link else ''}", flush=True)
        futures: dict[str, Any] = {}
        for run in todo:  # NNrelief runs come before their baselines (expand_grid's order)
            ref = futures.get(run.reference) if run.config.method.name != "relief" else None
            futures[run.name] = client.submit(execute_run, run.config, str(runs_dir), str(data), device, 1, ref,
                                              key=f"relief-run-{run.name}", retries=retries)
        by_key = {f.key: run for run, f in zip(todo, futures.values())}
        bar = _progress_bar(len(todo), progress)
        try:
            for future in as_completed(list(futures.values())):
                run = by_key[future.key]
                if future.status == "finished":
                    frames[run.name] = _rows(run, "done", future.result(), runs_dir)
                else:
                    try:
                        err = future.exception()
                    except BaseException as cancelled:  # a cancelled future has no exception to give
                        err = cancelled
                    message = f"{type(err).__name__}: {err}"
                    if run.config.method.name != "relief" and run.reference in futures and \
                            futures[run.reference].status == "error":
                        message = f"its NNrelief reference run {run.reference} failed ({message})"
                    frames[run.name] = _rows(run, "failed", None, runs_dir, message)
                bar.update(1)
        finally:
            bar.close()
        return client.scheduler.address
    finally:
        for thing in owned:
            thing.close()


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="finished runs", unit="run", disable=not enabled)


def _mark(df: pd.DataFrame, profile: str) -> str | None:
    from ..reporting.marks import SYNTHETIC_MARK

    if df.synthetic.astype(bool).any():
        return SYNTHETIC_MARK
    return SMOKE_MARK if profile == "smoke" else None


# ---------------------------------------------------------------------------------------------- results
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

    from ..reporting.plots import (
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
    figure per experiment) into ``folder``."""
    import matplotlib.pyplot as plt

    from ..reporting.plots import save_figure

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "sweep.csv", index=False)
    agg = aggregate(df)
    agg.to_csv(folder / "aggregate.csv", index=False)
    (folder / "report.md").write_text(sweep_report(df))
    for experiment in agg.experiment.unique():
        fig = plot_sweep(agg, experiment, mark=mark)
        save_figure(fig, folder, paths.safe_name(str(experiment), "experiment name"))
        plt.close(fig)
    return folder


# ---------------------------------------------------------------------------------------------- notebook
def from_notebook(namespace: dict[str, Any], before: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the sweep notebook calls: its ``parameters`` cell (names defined since ``before``) -> the saved
    sweep's table and aggregate. ``RELIEF_NB_FAST=1`` runs the smoke profile, as every notebook's fast path."""
    from ..experiments.presets import FAST_ENV

    params = {k: v for k, v in namespace.items() if k not in before and not k.startswith("_")}
    allowed = {"experiment", "alpha_conv", "alpha_fc", "seeds", "methods", "profile", "params", "scheduler",
               "results_dir", "data_dir", "device", "name"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"sweep notebook: unknown parameter(s) {unknown}; valid: {', '.join(sorted(allowed))}")
    if os.environ.get(FAST_ENV, "") not in ("", "0"):
        print(f"{FAST_ENV} is set: the fast path runs the smoke profile; its outputs are checks, not results.")
        params["profile"] = "smoke"
    df = run_sweep(params.pop("experiment"), save=True, progress=True, **params)
    print(f"{df.run.nunique()} runs ({df.attrs['submitted']} submitted, {df.attrs['failed']} failed); "
          f"tables and figures in {df.attrs['folder']}")
    return df, aggregate(df)


# ---------------------------------------------------------------------------------------------- command line
def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..experiments.config import parse_assignments

    grid: dict[str, Any] = load_grid(args.grid) if args.grid else {}
    cli = {"experiment": args.experiment, "alpha_conv": args.alpha_conv, "alpha_fc": args.alpha_fc,
           "seeds": args.seeds, "methods": args.methods, "profile": args.profile, "name": args.name,
           "device": args.device, "retries": args.retries}
    grid.update({k: v for k, v in cli.items() if v is not None})  # the command line wins over the file
    grid["params"] = {**grid.get("params", {}), **parse_assignments(args.param)}
    if not grid.get("experiment"):
        raise ValueError("no experiment: give --experiment NAME or a grid file with experiment = ...")
    experiment = grid.pop("experiment")
    df = run_sweep(experiment, **grid, scheduler=args.scheduler, results_dir=args.results_dir,
                   data_dir=args.data_dir, progress=not args.no_progress, save=True, execute=not args.collect)
    agg = aggregate(df)
    cols = [c for c in agg.columns if c not in ("network", "dataset", "synthetic", "flops_reduction_mean",
                                                 "val_error_pct_mean", "wall_time_s_mean")]
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(agg[cols].round(3).to_string(index=False))
    per_run = df.drop_duplicates("run")
    for row in per_run[per_run.status == "failed"].itertuples():
        print(f"FAILED {row.run}: {row.error}", file=sys.stderr)
    counts = per_run.status.value_counts()
    unfinished = "".join(f", {counts[s]} {s}" for s in ("partial", "not started") if counts.get(s))
    print(f"{len(per_run)} runs: {counts.get('done', 0)} ran, {counts.get('cached', 0)} already finished"
          f"{unfinished}, {counts.get('failed', 0)} failed; tables, report.md and figures in {df.attrs['folder']}")
    if per_run.synthetic.astype(bool).any():
        print("NOTE: synthetic stand-in data: these numbers are not results.")
    return 1 if df.attrs["failed"] else 0


def add_sweep_command(sub: Any) -> None:
    """Register ``relief-nb sweep`` on the CLI's subparsers."""
    p = sub.add_parser("sweep", help="run a grid of experiments on Dask (a local cluster, or --scheduler)",
                       description="Run a grid (experiments x alphas x seeds x methods x -p lists) as Dask tasks. "
                       "The grid comes from the options or a TOML file with the same keys (experiment, alpha_conv, "
                       "alpha_fc, seeds, methods, profile, name, [params]); options override the file. Writes "
                       "sweep.csv, aggregate.csv, report.md (per-iteration tables, published crossings, wall time) "
                       "and <experiment>.png to RESULTS_DIR/sweeps/<name>/ (RESULTS_DIR/smoke/sweeps for the smoke "
                       "profile). Exit code 1 if any run failed.")
    p.add_argument("grid", nargs="?", help="a TOML grid file (e.g. sweeps/lenet300-mnist.toml)")
    p.add_argument("--experiment", nargs="+", help="preset name(s), e.g. lenet300-mnist")
    p.add_argument("--alpha-conv", nargs="+", type=float)
    p.add_argument("--alpha-fc", nargs="+", type=float)
    p.add_argument("--seeds", nargs="+", type=int)
    p.add_argument("--methods", nargs="+", help="relief, magnitude_global, magnitude_layer, random")
    p.add_argument("--profile", help="paper, cpu (default) or smoke")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any ExperimentConfig setting; a list value (NAME=[a,b]) is one more grid axis")
    p.add_argument("--scheduler", default=None,
                   help=f"address of a running Dask scheduler (default: ${SCHEDULER_ENV}, else a local cluster "
                   "of one single-threaded process per core)")
    p.add_argument("--name", help="the sweep's folder name (default: the grid file's stem, else a hash)")
    p.add_argument("--retries", type=int, help="Dask retries of a failed task (default 2)")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--data-dir", default=str(paths.default_data_dir()))
    p.add_argument("--results-dir", default=str(paths.default_results_dir()))
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: write the tables and figures from what the run folders hold now "
                   "(unfinished runs count with the iterations they have finished)")
    p.set_defaults(func=_cmd_sweep)
