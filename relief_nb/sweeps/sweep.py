"""Sweeps: a grid of experiments run as Dask tasks, gathered into one tidy table, aggregated over seeds.

This module runs a sweep (:func:`run_sweep`) and is its command (``relief-nb sweep``); the grid is expanded in
:mod:`.grid`, tasks execute through :mod:`.cluster`, and the tables, figure and report come from :mod:`.report`.

A grid is experiments (preset names) x ``alpha_conv`` x ``alpha_fc`` x seeds x methods, times any other
:class:`~relief_nb.ExperimentConfig` setting given as a list in ``params`` (a list is an axis, a scalar
or a tuple one value for every run; ``*_milestones`` take a list of ints as one value). Every point is one run
folder (:class:`~relief_nb.Run`, named by its hyperparameters), so the design leans on what runs
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
    from relief_nb import run_sweep

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
(:func:`relief_nb.common.paths.runs_folder`), where notebooks and ``relief-nb run`` find and reuse them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..common import paths
from ..experiments.devices import resolve_device
from ..experiments.run import Run
from ..reporting.marks import SMOKE_MARK
from ..reporting.tables import METHOD_LABELS
from .cluster import SCHEDULER_ENV, EpochProgress, _connect, _dashboard, execute_run, run_done
from .grid import GRID_KEYS, SweepRun, _as_list, expand_grid, grid_errors, load_grid
from .report import METRIC_COLUMNS, aggregate, plot_sweep, save_sweep, sweep_report

__all__ = ["GRID_KEYS", "SweepRun", "add_sweep_command", "aggregate", "execute_run", "expand_grid", "load_grid",
           "metric_rows", "plot_sweep", "run_done", "run_sweep", "save_sweep", "sweep_report"]


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
              runs_per_gpu: int = 1,
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
    resolve_device(device)  # an unknown device, or CUDA asked for where there is none: one line, before any worker
    runs_dir = paths.runs_folder(results, profile)
    experiments = _as_list(experiment)
    runs = expand_grid(experiments, alpha_conv, alpha_fc, seeds, methods, profile, params, data)
    if execute and (errors := grid_errors(runs, data)):  # the whole grid checked before a worker starts
        raise ValueError(f"the grid has {len(errors)} invalid setting(s), nothing was run: " + "; ".join(errors))
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
        address = _submit_all(todo, frames, runs_dir, data, device, retries, progress, scheduler, runs_per_gpu)
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
                retries: int, progress: bool, scheduler: Any, runs_per_gpu: int = 1) -> str:
    """Submit every run not yet done (baselines depending on their reference's future), collect as they finish."""
    from distributed import as_completed

    client, owned = _connect(scheduler, device, runs_per_gpu)
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
        bar = EpochProgress({run.name: (runs_dir / run.name, run.config) for run in todo}, progress)
        pending = as_completed(list(futures.values()))
        try:
            while not pending.is_empty():
                ready = pending.next_batch(block=False) if pending.has_ready() else []
                for future in ready:
                    _collect(future, by_key[future.key], futures, frames, runs_dir)
                    bar.run_finished(by_key[future.key].name)
                bar.poll()
                if not ready:
                    time.sleep(0.2)
        finally:
            bar.close()
        return client.scheduler.address
    finally:
        for thing in owned:
            thing.close()


def _collect(future: Any, run: SweepRun, futures: dict[str, Any], frames: dict[str, pd.DataFrame],
             runs_dir: Path) -> None:
    """A finished task's rows: its metrics, or its error (a baseline's says when its reference failed)."""
    if future.status == "finished":
        frames[run.name] = _rows(run, "done", future.result(), runs_dir)
        return
    try:
        err = future.exception()
    except BaseException as cancelled:  # a cancelled future has no exception to give
        err = cancelled
    message = f"{type(err).__name__}: {err}"
    if run.config.method.name != "relief" and run.reference in futures and futures[run.reference].status == "error":
        message = f"its NNrelief reference run {run.reference} failed ({message})"
    frames[run.name] = _rows(run, "failed", None, runs_dir, message)


def _mark(df: pd.DataFrame, profile: str) -> str | None:
    from ..reporting.marks import SYNTHETIC_MARK

    if df.synthetic.astype(bool).any():
        return SYNTHETIC_MARK
    return SMOKE_MARK if profile == "smoke" else None


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
           "device": args.device, "retries": args.retries, "runs_per_gpu": args.runs_per_gpu}
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
    from ..pruning.methods import list_methods

    p = sub.add_parser("sweep", help="run a grid of experiments on Dask (a local cluster, or --scheduler)",
                       description="Run a grid (experiments x alphas x seeds x methods x -p lists) as Dask tasks. "
                       "The grid comes from the options or a TOML file with the same keys (experiment, alpha_conv, "
                       "alpha_fc, seeds, methods, profile, name, [params]); options override the file. Writes "
                       "sweep.csv, aggregate.csv, report.md (per-iteration tables, published crossings, wall time) "
                       "and <experiment>.png to RESULTS_DIR/sweeps/<name>/ (RESULTS_DIR/smoke/sweeps for the smoke "
                       "profile). Exit code 1 if any run failed.")
    p.add_argument("grid", nargs="?", help="a TOML grid file (e.g. sweeps/lenet300-mnist.toml)")
    p.add_argument("--experiment", nargs="+", help="preset name(s), e.g. lenet300-mnist")
    p.add_argument("--alpha-conv", nargs="+", type=float, help="alpha(s) of the conv layers, in (0, 1] (an axis)")
    p.add_argument("--alpha-fc", nargs="+", type=float, help="alpha(s) of the linear layers, in (0, 1] (an axis)")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (an axis; default 0)")
    p.add_argument("--methods", nargs="+", help=f"any of {', '.join(list_methods())} (default: relief)")
    p.add_argument("--profile", help="paper, cpu (default) or smoke")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any ExperimentConfig setting; a list value (NAME=[a,b]) is one more grid axis")
    p.add_argument("--scheduler", default=None,
                   help=f"address of a running Dask scheduler (default: ${SCHEDULER_ENV}, else a local cluster "
                   "of one single-threaded process per core)")
    p.add_argument("--name", help="the sweep's folder name (default: the grid file's stem, else a hash)")
    p.add_argument("--retries", type=int, help="Dask retries of a failed task (default 2)")
    p.add_argument("--runs-per-gpu", type=int, help="runs sharing one GPU at a time on the default local cluster "
                   "(dask-cuda's LocalCUDACluster, chosen when CUDA is present; default 1)")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--data-dir", default=str(paths.default_data_dir()),
                   help="where data sets live (default: %(default)s)")
    p.add_argument("--results-dir", default=str(paths.default_results_dir()),
                   help="runs go to RESULTS_DIR/runs, tables to RESULTS_DIR/sweeps/<name> (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epochs over all runs)")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: write the tables and figures from what the run folders hold now "
                   "(unfinished runs count with the iterations they have finished)")
    p.set_defaults(func=_cmd_sweep)
