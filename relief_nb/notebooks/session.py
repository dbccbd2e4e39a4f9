"""What a notebook calls: its parameters checked and resolved, its runs, tables and figures.

Every notebook template (``relief_nb/templates``) has the same shape: an import cell that records the names
already defined, one ``parameters`` cell of literals, then ``session = rnb.start(NAME, globals(), _before)``,
which validates the parameters (unknown names, wrong types, unknown profile: an error listing the valid ones)
and computes everything derived from them, after papermill's injection. The rest calls the session.

Fast path (as nbdev's): with ``RELIEF_NB_FAST=1`` in the environment the session runs the ``smoke`` profile
whatever the ``profile`` parameter says. nbval re-executes the committed notebooks this way, so notebooks
whose saved outputs are real results still check in minutes.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..common import paths
from ..common.files import atomic_write
from ..data.datasets import DATASETS, Dataset, fetch_command, prepare
from ..experiments.config import ExperimentConfig, override
from ..experiments.devices import resolve_device
from ..experiments.run import Run
from ..experiments.config import parse_assignments
from ..experiments.presets import EXPERIMENTS, FAST_ENV, PROFILES, experiment_config
from ..reporting.marks import SMOKE_MARK
from ..reporting.tables import METHOD_LABELS, final_row, method_table
from .specs import NOTEBOOKS, TABLES, check_parameters

__all__ = ["NOTEBOOKS", "PROGRESS_ENV", "TABLES", "Session", "check_parameters", "start"]

PROGRESS_ENV = "RELIEF_NB_PROGRESS"  # "text": plain progress lines (set by `relief-nb notebook`), else bars


def start(template: str, namespace: dict[str, Any], before: set[str]) -> Session:
    """Validate the parameters a notebook defined (and papermill injected) since ``before``.

    ``template`` is the notebook's name, or ``"table"`` for the shared table template, whose ``table``
    parameter names the paper table (``lenet-mnist``, ``cifar10``, ...).
    """
    params = {k: v for k, v in namespace.items() if k not in before and not k.startswith("_")}
    name = params.pop("table", None) if template == "table" else template
    if template == "table" and name not in TABLES:
        raise ValueError(f"parameter table={name!r}: expected one of {', '.join(TABLES)}")
    params = check_parameters(name, params)
    if os.environ.get(FAST_ENV, "") not in ("", "0"):
        print(f"{FAST_ENV} is set: the fast path runs the smoke profile instead of {params['profile']!r}; "
              "its outputs are checks, not results.")
        params = {**params, "profile": "smoke"}
    session = Session(name, params)
    session.banner()
    return session


class Session:
    """A notebook's parameters resolved: device, folders, experiment configs; runs, tables and figures."""

    def __init__(self, notebook: str, params: dict[str, Any]) -> None:
        self.notebook = notebook
        self.spec = NOTEBOOKS[notebook]
        self.params = params
        self.profile: str = params["profile"]
        results_dir = params.get("results_dir") or paths.default_results_dir()
        self.results_dir = Path(results_dir)
        self.results = paths.notebook_folder(results_dir, self.profile, notebook)
        self.runs_dir = paths.runs_folder(results_dir, self.profile)
        self.figures = self.results / "figures"
        self.data_dir = Path(params.get("data_dir") or paths.default_data_dir())
        self.device = resolve_device(params.get("device", "auto"))
        progress = params.get("progress", "auto")
        self.progress: bool | str = self.profile != "smoke" if progress == "auto" else bool(progress)
        if self.progress and os.environ.get(PROGRESS_ENV) == "text":
            self.progress = "text"
        self.synthetic: dict[str, bool] = {}

    # ---------------------------------------------------------------- configuration
    def overrides(self) -> dict[str, Any]:
        keys = ("seed", "alpha_conv", "alpha_fc", "iterations", "pretrain_epochs", "retrain_epochs")
        return {k: self.params[k] for k in keys if self.params.get(k) is not None}

    def data_available(self, dataset: str) -> bool:
        return (self.data_dir / DATASETS[dataset].folder).exists()

    def config(self, experiment: str) -> ExperimentConfig:
        cfg = experiment_config(experiment, self.profile, **self.overrides())
        if not self.data_available(cfg.data.name):
            if self.profile != "smoke":
                raise FileNotFoundError(f"data set {cfg.data.name!r} not found in {self.data_dir}; fetch it with: "
                                        f"{fetch_command(cfg.data.name, self.data_dir)}")
            cfg = experiment_config(experiment, self.profile, synthetic=True, **self.overrides())
        self.synthetic[experiment] = cfg.data.synthetic
        return cfg

    def mark(self, experiment: str | None = None) -> str | None:
        """The stamp for figures and tables: SYNTHETIC for stand-in data, SMOKE for the smoke profile."""
        from ..reporting.marks import SYNTHETIC_MARK

        experiments = [experiment] if experiment else list(self.spec.experiments)
        if any(self.synthetic.get(e, False) for e in experiments):
            return SYNTHETIC_MARK
        return SMOKE_MARK if self.profile == "smoke" else None

    def banner(self) -> None:
        print(f"notebook {self.notebook!r} | profile {self.profile} | device {self.device} | "
              f"data {self.data_dir} | results {self.results}")
        for experiment in self.spec.experiments:
            cfg = self.config(experiment)
            if cfg.data.synthetic:
                message = (f"{cfg.data.name} is not in {self.data_dir}; {experiment} runs on a SYNTHETIC stand-in "
                           f"of the same shape. Its numbers are NOT results. Fetch the real data with: "
                           f"{fetch_command(cfg.data.name, self.data_dir)}")
                print("NOTE: " + message)
                warnings.warn(message, stacklevel=2)

    def describe(self) -> None:
        """A heading naming the notebook, its data and the profile whose outputs the reader sees."""
        from ..reporting.style import display_name

        stand_in = "a SYNTHETIC stand-in of "
        experiments = ", ".join(f"{display_name(EXPERIMENTS[e].model)} on "
                                f"{stand_in if self.synthetic.get(e) else ''}{EXPERIMENTS[e].data.name}"
                                for e in self.spec.experiments)
        kind = {"smoke": "smoke profile: a tiny schedule that checks the notebook runs; its numbers are not results",
                "cpu": "cpu profile: the paper's method on a schedule shortened for a 2-core CPU",
                "paper": "paper profile: the paper's full schedule"}[self.profile]
        text = f"## {self.spec.title}\n\n{experiments}. Outputs below: {kind}."
        try:
            from IPython.display import Markdown
        except ImportError:
            print(text)
        else:
            _show(Markdown(text))

    def dataset(self, experiment: str) -> Dataset:
        """The experiment's data exactly as its run sees it (real or stand-in, subset applied)."""
        return Run(self.config(experiment), self.runs_dir, self.data_dir, self.device, progress=False)._data()

    def scoring_batch(self, experiment: str, n: int | None = None):
        """``n`` training images (default: the experiment's scoring size), normalised, on the device."""
        ds = self.dataset(experiment)
        return prepare(ds.train_x[: n or self.config(experiment).data.scoring_size], ds, self.device)

    # ---------------------------------------------------------------- runs
    def _execute(self, cfg: ExperimentConfig, label: str) -> Run:
        run = Run(cfg, self.runs_dir, self.data_dir, self.device, progress=self.progress, label=label,
                  meta={"notebook": self.spec.name, "profile": self.profile})
        run.run()
        return run

    def run(self, experiment: str) -> Run:
        return self._execute(self.config(experiment), experiment)

    def run_own(self, factory: Callable[..., Any], name: str, like: str = "lenet5-mnist", data: Any = None,
                **overrides: Any) -> Run:
        """The whole iterative experiment on a network of your own: ``factory`` builds it (see :class:`Run`),
        ``name`` labels it, ``like`` is the preset whose method settings and schedule (at this notebook's
        profile) it takes, ``data`` defaults to that preset's data as this notebook sees it, ``overrides`` are
        experiment settings (e.g. ``iterations=2``). The run folder sits beside the presets' runs."""
        cfg = override(self.config(like), model=name, **overrides)
        data = self.dataset(like) if data is None else data
        run = Run(cfg, self.runs_dir, self.data_dir, self.device, progress=self.progress, label=name, data=data,
                  model=factory, meta={"notebook": self.spec.name, "profile": self.profile, "like": like})
        run.run()
        return run

    def run_all(self) -> dict[str, Run]:
        return {name: self.run(name) for name in self.spec.experiments}

    def run_baselines(self, runs: dict[str, Run]) -> dict[str, dict[str, Run]]:
        """Per experiment: its NNrelief run and, if the ``baselines`` parameter is on, each baseline pruned to
        NNrelief's sparsity at every iteration with the same retraining budget."""
        from ..pruning.baselines import BASELINES

        out: dict[str, dict[str, Run]] = {}
        wanted = self.params.get("baselines", False)
        for name, reference in runs.items():
            out[name] = {"relief": reference}
            if not (wanted is True or (isinstance(wanted, (list, tuple)) and name in wanted)):
                continue
            for method in BASELINES:
                iterations = self.params.get("baseline_iterations") or reference.config.schedule.iterations
                cfg = override(reference.config, method=method, reference=reference.folder.parent.name,
                              iterations=min(iterations, reference.config.schedule.iterations))
                out[name][method] = self._execute(cfg, f"{name} {METHOD_LABELS[method]}")
        return out

    # ---------------------------------------------------------------- tables
    def save_table(self, df: pd.DataFrame, name: str) -> pd.DataFrame:
        name = paths.safe_name(name, "table name", ".json", "accuracy")
        self.results.mkdir(parents=True, exist_ok=True)
        atomic_write(self.results / f"{name}.csv", df.to_csv(index=False))
        atomic_write(self.results / f"{name}.json", df.to_json(orient="records", indent=1))
        return df

    def _caption(self, df: pd.DataFrame, caption: str, experiments: list[str] | None = None):
        mark = self.mark(experiments[0] if experiments and len(experiments) == 1 else None)
        text = caption + (f" [{mark}]" if mark else "")
        return df.style.set_caption(text).format(precision=2).hide(axis="index")

    def fingerprint(self):
        """The method's fingerprint (see :mod:`relief_nb.experiments.fingerprint`): what each experiment's paper settings keep
        of a fixed probe network, identical on every CPU; the notebooks' regression check."""
        from ..experiments.fingerprint import method_fingerprint

        return pd.concat([method_fingerprint(e) for e in self.spec.experiments], ignore_index=True)

    def results_table(self, runs: dict[str, Run]):
        """The paper-style table: baseline and final error, compression, FLOPs reduction, per run."""
        df = self.save_table(pd.DataFrame([final_row(name, run) for name, run in runs.items()]), "table")
        return self._caption(df, f"{self.spec.title} (profile {self.profile}; test error %, selected on the "
                                 "validation split)")

    def iteration_tables(self, runs: dict[str, Run]) -> None:
        """Per run: accuracy, error and size at every iteration, captioned with the network."""
        from ..reporting.style import display_name

        for name, run in runs.items():
            m = run.metrics()
            df = pd.DataFrame({"iteration": m.iteration, "val error %": 100 * (1 - m.val_acc),
                               "test error %": 100 * m.test_error, "params": m.params_remaining,
                               "compression": m.compression, "FLOPs reduction": m.flops_reduction})
            _show(self._caption(df, f"{display_name(name)}: every iteration", [name]))

    def compare_methods(self, by_method: dict[str, dict[str, Run]]):
        """Test error (%) of every method at each iteration, where all share NNrelief's compression."""
        tables = [method_table(name, {m: r.metrics() for m, r in methods.items()})
                  for name, methods in by_method.items()]
        df = self.save_table(pd.concat(tables, ignore_index=True), "methods")
        return self._caption(df, "Test error % of each method at NNrelief's per-iteration sparsity")

    # ---------------------------------------------------------------- figures
    def figure(self, fig, name: str):
        """Save ``fig`` as ``figures/<name>.png`` and return it, so the cell shows it once."""
        import matplotlib.pyplot as plt

        from ..reporting.style import save_figure

        save_figure(fig, self.figures, name)
        plt.close(fig)  # the returned figure is drawn by the cell's result; an open one would be drawn twice
        return fig

    def plot_runs(self, runs: dict[str, Run]) -> None:
        """Per run: test error against remaining parameters (published points for the LeNets) and the
        per-layer sparsity over iterations."""
        from ..reporting import plots

        for name, run in runs.items():
            fig = plots.plot_accuracy_vs_parameters({"NNrelief": run.metrics()}, network=run.config.model,
                                                    mark=self.mark(name))
            _show(self.figure(fig, f"{name}_error"))
            _show(self.figure(plots.plot_layer_sparsity(run.layers(), name, mark=self.mark(name)), f"{name}_layers"))

    def plot_scores(self, runs: dict[str, Run]) -> None:
        """Per run: the distribution of importance scores of the final pruned model."""
        from ..reporting import plots

        for name, run in runs.items():
            scores = plots.layer_scores(run.load_model().to(self.device), self.scoring_batch(name))
            _show(self.figure(plots.plot_score_distributions(scores, name, mark=self.mark(name)), f"{name}_scores"))

    def plot_methods(self, by_method: dict[str, dict[str, Run]]) -> None:
        """One figure per experiment whose baselines were run: every method's error at equal sparsity."""
        from ..reporting.plots import plot_accuracy_vs_parameters

        for name, methods in by_method.items():
            if len(methods) > 1:
                fig = plot_accuracy_vs_parameters({METHOD_LABELS[m]: r.metrics() for m, r in methods.items()},
                                                  network=methods["relief"].config.model, mark=self.mark(name))
                _show(self.figure(fig, f"{name}_methods"))

    # ---------------------------------------------------------------- summary
    def gather(self) -> pd.DataFrame:
        """Every run of this profile (notebooks and ``relief-nb run`` alike), one row each."""
        from ..experiments.migration import migrate_runs
        from ..reporting.tables import gather_results

        migrate_runs(self.runs_dir, self.data_dir)  # folders of an older layout join the table
        return gather_results(self.runs_dir)

    def summary(self, results: pd.DataFrame):
        from ..reporting.tables import summary_table

        if not len(results):
            return f"no finished runs under {self.runs_dir} yet"
        df = self.save_table(summary_table(results), "summary")
        synthetic = bool(results.synthetic.any()) if len(results) else False
        mark = "SYNTHETIC rows are stand-ins, not results" if synthetic else (
            SMOKE_MARK if self.profile == "smoke" else None)
        caption = "Every run (final iteration) beside the published numbers" + (f" [{mark}]" if mark else "")
        return df.style.set_caption(caption).format(precision=2).hide(axis="index")

    def plot_summary(self, results: pd.DataFrame) -> None:
        from ..reporting.plots import plot_summary
        from ..reporting.tables import summary_rows

        if len(results):
            mark = SMOKE_MARK if self.profile == "smoke" else None
            _show(self.figure(plot_summary(summary_rows(results), mark=mark), "summary"))
        else:
            print(f"no finished runs under {self.runs_dir} yet")


def _show(obj) -> None:
    """Display a figure or table inside a notebook; print tables elsewhere."""
    if "IPython" in sys.modules:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(obj)
            return
    data = getattr(obj, "data", None)  # a pandas Styler's frame, or an IPython Markdown's text
    if isinstance(data, pd.DataFrame):
        print(data.to_string(index=False))
    elif isinstance(data, str):
        print(data)
