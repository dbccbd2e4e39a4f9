"""What the notebooks call, and the batch commands over papermill.

Every notebook in ``notebooks/`` has the same shape: an import cell that records the names already defined,
one ``parameters`` cell of literals, then ``session = start(NAME, globals(), _before)``, which validates the
parameters (unknown names, wrong types, unknown profile: an error listing the valid ones) and computes
everything derived from them. The rest of the notebook calls the session and the plotting helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from .data import DATASETS, Dataset, fetch_command
from .experiment import ExperimentConfig, Run, _resolve_device
from .presets import EXPERIMENTS, PROFILES, experiment_config

__all__ = ["NOTEBOOKS", "Session", "add_notebook_commands", "list_notebooks", "start"]

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@dataclass(frozen=True)
class NotebookSpec:
    name: str
    title: str
    experiments: tuple[str, ...] = ()
    parameters: tuple[str, ...] = field(default=(
        "profile", "seed", "device", "data_dir", "results_dir", "alpha_conv", "alpha_fc", "iterations",
        "pretrain_epochs", "retrain_epochs", "progress", "baselines", "baseline_iterations"))

    @property
    def path(self) -> Path:
        return NOTEBOOK_DIR / f"{self.name}.ipynb"

    @property
    def is_table(self) -> bool:
        return bool(self.experiments)


NOTEBOOKS: dict[str, NotebookSpec] = {nb.name: nb for nb in [
    NotebookSpec("tour", "Guided tour: what NNrelief does, on LeNet-300-100 and real MNIST", ("lenet300-mnist",)),
    NotebookSpec("lenet-mnist", "Table: LeNet-300-100 and LeNet-5 on MNIST", ("lenet300-mnist", "lenet5-mnist")),
    NotebookSpec("cifar10", "Table: VGG-like (Adam) and ResNet-20 (SGD) on CIFAR-10",
                 ("vgglike-cifar10", "resnet20-cifar10")),
    NotebookSpec("cifar100", "Table: ResNet-56 on CIFAR-100", ("resnet56-cifar100",)),
    NotebookSpec("tiny-imagenet", "Table: VGG-19 and ResNet-18 on Tiny-ImageNet", ("vgg19-tiny", "resnet18-tiny")),
    NotebookSpec("summary", "Summary: every run's results beside the published numbers", (),
                 ("profile", "results_dir")),
]}
TABLES = [name for name, nb in NOTEBOOKS.items() if nb.is_table and name != "tour"]

# name -> (allowed types, description); None stands for "use the profile's value"
PARAMETER_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "profile": ((str,), f"one of {', '.join(PROFILES)}"),
    "seed": ((int,), "integer seed"),
    "device": ((str,), "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    "data_dir": ((str,), "folder holding the data sets"),
    "results_dir": ((str,), "folder for run folders, figures and tables"),
    "alpha_conv": ((float, int, type(None)), "fraction in (0, 1] or None"),
    "alpha_fc": ((float, int, type(None)), "fraction in (0, 1] or None"),
    "iterations": ((int, type(None)), "integer >= 0 or None"),
    "pretrain_epochs": ((int, type(None)), "integer >= 0 or None"),
    "retrain_epochs": ((int, type(None)), "integer >= 0 or None"),
    "progress": ((bool, str), "True, False or 'auto' (bars unless profile is smoke)"),
    "baseline_iterations": ((int, type(None)), "iterations of the baselines (None: as many as NNrelief)"),
    "baselines": ((bool, list, tuple), "True, False, or a list of this notebook's experiments to run the "
                  "magnitude and random baselines for"),
}


def results_folder(results_dir: str | os.PathLike, profile: str, notebook: str) -> Path:
    """Where a notebook's outputs go; smoke runs live apart so they never overwrite real results."""
    root = Path(results_dir) / "smoke" if profile == "smoke" else Path(results_dir)
    return root / notebook


def list_notebooks() -> list[NotebookSpec]:
    return list(NOTEBOOKS.values())


def _valid_list(spec: NotebookSpec) -> str:
    return "; ".join(f"{p} ({PARAMETER_TYPES[p][1]})" for p in spec.parameters)


def check_parameters(notebook: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate a notebook's parameters: names, types, profile. Raises ValueError listing the valid ones."""
    if notebook not in NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; notebooks: {', '.join(NOTEBOOKS)}")
    spec = NOTEBOOKS[notebook]
    unknown = sorted(set(params) - set(spec.parameters))
    if unknown:
        raise ValueError(f"notebook {notebook!r}: unknown parameter(s) {unknown}; valid parameters: "
                         f"{_valid_list(spec)}")
    for name, value in params.items():
        types, description = PARAMETER_TYPES[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"notebook {notebook!r}: parameter {name}={value!r} has the wrong type; expected "
                             f"{description}")
    if params.get("profile") not in PROFILES:
        raise ValueError(f"notebook {notebook!r}: unknown profile {params.get('profile')!r}; valid profiles: "
                         f"{', '.join(PROFILES)}")
    return params


def start(notebook: str, namespace: dict[str, Any], before: set[str]) -> Session:
    """Validate the parameters a notebook defined (and papermill injected) since ``before``."""
    params = {k: v for k, v in namespace.items() if k not in before and not k.startswith("_")}
    session = Session(notebook, check_parameters(notebook, params))
    session.banner()
    return session


class Session:
    """A notebook's parameters resolved: device, folders, experiment configs; runs and tables."""

    def __init__(self, notebook: str, params: dict[str, Any]) -> None:
        self.notebook = notebook
        self.spec = NOTEBOOKS[notebook]
        self.params = params
        self.profile: str = params["profile"]
        self.results = results_folder(params.get("results_dir", "results"), self.profile, notebook)
        self.figures = self.results / "figures"
        self.data_dir = Path(params.get("data_dir", "data"))
        self.device = _resolve_device(params.get("device", "auto"))
        progress = params.get("progress", "auto")
        self.progress = self.profile != "smoke" if progress == "auto" else bool(progress)
        self.synthetic: dict[str, bool] = {}

    # ---------------------------------------------------------------- configuration
    def overrides(self) -> dict[str, Any]:
        keys = ("seed", "alpha_conv", "alpha_fc", "iterations", "pretrain_epochs", "retrain_epochs")
        return {k: self.params[k] for k in keys if self.params.get(k) is not None}

    def data_available(self, dataset: str) -> bool:
        return (self.data_dir / DATASETS[dataset].folder).exists()

    def config(self, experiment: str) -> ExperimentConfig:
        cfg = experiment_config(experiment, self.profile, **self.overrides())
        if not self.data_available(cfg.dataset):
            if self.profile != "smoke":
                raise FileNotFoundError(f"data set {cfg.dataset!r} not found in {self.data_dir}; fetch it with: "
                                        f"{fetch_command(cfg.dataset, self.data_dir)}")
            cfg = experiment_config(experiment, self.profile, synthetic=True, **self.overrides())
        self.synthetic[experiment] = cfg.synthetic
        return cfg

    def banner(self) -> None:
        print(f"notebook {self.notebook!r} | profile {self.profile} | device {self.device} | "
              f"results in {self.results}")
        for experiment in self.spec.experiments:
            cfg = self.config(experiment)
            if cfg.synthetic:
                print(f"NOTE: {cfg.dataset} is not in {self.data_dir}; {experiment} runs on a SYNTHETIC "
                      "stand-in of the same shape. Its numbers are NOT results.")

    def dataset(self, experiment: str) -> Dataset:
        """The experiment's data exactly as its run sees it (real or stand-in, subset applied)."""
        return Run(self.config(experiment), self.results / "runs", self.data_dir, self.device, progress=False)._data()

    def scoring_batch(self, experiment: str, n: int | None = None):
        """``n`` training images (default: the experiment's scoring size), normalised, on the device."""
        from .data import prepare

        ds = self.dataset(experiment)
        return prepare(ds.train_x[: n or self.config(experiment).scoring_size], ds, self.device)

    # ---------------------------------------------------------------- runs
    def run(self, experiment: str) -> Run:
        cfg = self.config(experiment)
        run = Run(cfg, self.results / "runs", self.data_dir, self.device, progress=self.progress)
        run.run()
        return run

    def run_all(self) -> dict[str, Run]:
        return {name: self.run(name) for name in self.spec.experiments}

    def run_baselines(self, runs: dict[str, Run]) -> dict[str, dict[str, Run]]:
        """Per experiment: its NNrelief run and, if the ``baselines`` parameter is on, each baseline pruned to
        NNrelief's sparsity at every iteration with the same retraining budget."""
        from .baselines import BASELINES

        out: dict[str, dict[str, Run]] = {}
        wanted = self.params.get("baselines", False)
        for name, reference in runs.items():
            out[name] = {"relief": reference}
            if not (wanted is True or (isinstance(wanted, (list, tuple)) and name in wanted)):
                continue
            for method in BASELINES:
                iterations = self.params.get("baseline_iterations") or reference.config.iterations
                cfg = replace(reference.config, method=method, reference=str(reference.folder),
                              iterations=min(iterations, reference.config.iterations))
                run = Run(cfg, self.results / "runs", self.data_dir, self.device, progress=self.progress)
                run.run()
                out[name][method] = run
        return out

    def compare_methods(self, by_method: dict[str, dict[str, Run]]) -> pd.DataFrame:
        """Test accuracy of every method at each iteration, where all share NNrelief's compression."""
        frames = []
        for name, methods in by_method.items():
            for method, run in methods.items():
                m = run.metrics()
                frames.append(pd.DataFrame({"experiment": name, "iteration": m.iteration, "method": method,
                                            "compression": m.compression.round(2),
                                            "test_acc": m.test_acc}))
        df = pd.concat(frames, ignore_index=True)
        wide = df.pivot_table(index=["experiment", "iteration"], columns="method", values="test_acc")
        comp = df[df.method == "relief"].set_index(["experiment", "iteration"]).compression
        table = wide.assign(relief_compression=comp).reset_index()
        return self.save_table(table, "methods")

    def plot_methods(self, by_method: dict[str, dict[str, Run]]) -> None:
        """One figure per experiment whose baselines were run: every method's accuracy at equal sparsity."""
        from .plots import plot_accuracy_vs_parameters

        for name, methods in by_method.items():
            if len(methods) > 1:
                fig = plot_accuracy_vs_parameters({m: r.metrics() for m, r in methods.items()},
                                                  network=methods["relief"].config.model,
                                                  title=f"{name}: methods at equal sparsity")
                _show(self.figure(fig, f"{name}_methods"))

    def gather(self) -> pd.DataFrame:
        """Every run of this profile's results folder (see :func:`gather_results`)."""
        return gather_results(self.results.parent)

    def save_table(self, df: pd.DataFrame, name: str) -> pd.DataFrame:
        self.results.mkdir(parents=True, exist_ok=True)
        df.to_csv(self.results / f"{name}.csv", index=False)
        (self.results / f"{name}.json").write_text(df.to_json(orient="records", indent=1))
        return df

    def figure(self, fig, name: str):
        """Save ``fig`` as ``figures/<name>.png`` and return it, so the cell shows it once."""
        import matplotlib.pyplot as plt

        from .plots import save_figure

        save_figure(fig, self.figures, name)
        plt.close(fig)  # the returned figure is drawn by the cell's result; an open one would be drawn twice
        return fig

    def results_table(self, runs: dict[str, Run]) -> pd.DataFrame:
        """The paper-style table: baseline and final error, compression, FLOPs reduction, per run."""
        rows = [final_row(name, run) for name, run in runs.items()]
        return self.save_table(pd.DataFrame(rows), "table")

    def structure_table(self, runs: dict[str, Run]) -> pd.DataFrame:
        """Counts that a code change would alter (checked by nbval): remaining parameters per iteration."""
        frames = []
        for name, run in runs.items():
            m = run.metrics()
            frames.append(pd.DataFrame({"experiment": name, "iteration": m.iteration,
                                        "params_remaining": m.params_remaining,
                                        "compression": m.compression.round(1)}))
        return pd.concat(frames, ignore_index=True)


def _show(fig) -> None:
    """Display a figure inside a notebook (a no-op elsewhere)."""
    try:
        from IPython.display import display
    except ImportError:
        return
    display(fig)


def alpha_sweep(scores, alphas=(0.5, 0.8, 0.9, 0.95, 0.99, 1.0), rule: str = "paper") -> pd.DataFrame:
    """For one layer's scores (units x connections): connections kept and mass kept, per alpha."""
    from .selection import select

    rows = []
    for alpha in alphas:
        keep = select(scores, alpha, rule)  # type: ignore[arg-type]
        rows.append({"alpha": alpha, "kept_connections": int(keep.sum()),
                     "kept_fraction": round(float(keep.float().mean()), 4),
                     "kept_mass": round(float((scores * keep).sum() / scores.sum()), 4)})
    return pd.DataFrame(rows)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """relief_nb's final rows beside the published numbers of SPEC.md, in the paper's layout."""
    from .published import published_table

    note = results.synthetic.map({True: ", SYNTHETIC stand-in: not a result)", False: ")"})
    ours = results.assign(method="NNrelief (relief_nb" + note)
    ours = ours[["network", "dataset", "method", "error_pct", "compression", "flops_reduction", "iterations"]]
    pub = published_table().assign(dataset="mnist")
    return pd.concat([ours, pub], ignore_index=True).sort_values(["network", "compression"], kind="stable")


def final_row(name: str, run: Run) -> dict[str, Any]:
    m = run.metrics()
    first, last = m.iloc[0], m.iloc[-1]
    return {
        "experiment": name, "network": run.config.model, "dataset": run.config.dataset,
        "synthetic": run.config.synthetic, "iterations": int(last.iteration),
        "baseline_error_pct": round(100 * first.test_error, 2), "error_pct": round(100 * last.test_error, 2),
        "params": int(last.params_remaining), "compression": round(float(last.compression), 2),
        "flops_reduction": round(float(last.flops_reduction), 2),
    }


def gather_results(results_dir: str | os.PathLike) -> pd.DataFrame:
    """Every run under ``results_dir`` (any notebook's ``runs/``), its final row; for the summary notebook."""
    rows = []
    for config_path in sorted(Path(results_dir).glob("*/runs/*/config.json")):
        folder = config_path.parent
        if not (folder / "metrics.csv").exists():
            continue
        cfg = ExperimentConfig.from_dict(json.loads(config_path.read_text()))
        name = next((k for k, v in EXPERIMENTS.items() if (v.model, v.dataset) == (cfg.model, cfg.dataset)),
                    cfg.model)
        run = Run(cfg, folder.parent)
        row = final_row(name, run)
        row["notebook"] = folder.parent.parent.name
        row["run"] = folder.name
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------- command line

def _execute(name: str, profile: str, extra: dict[str, Any], results_dir: Path, data_dir: Path,
             in_place: bool = False) -> Path:
    import papermill as pm

    spec = NOTEBOOKS[name]
    params = {"profile": profile, **extra}
    if not in_place:
        folders = {"results_dir": str(results_dir.resolve()), "data_dir": str(data_dir.resolve())}
        params.update({k: v for k, v in folders.items() if k in spec.parameters})
    check_parameters(name, params)
    output = spec.path if in_place else results_folder(results_dir, profile, name) / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(spec.path), str(output), parameters={} if in_place else params,
                        kernel_name="python3", cwd=str(NOTEBOOK_DIR), progress_bar=False)
    clean_notebook(output)
    return output


def clean_notebook(path: Path) -> None:
    """Strip papermill's timestamps and durations, so an executed notebook diffs only where it changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def _missing_data(name: str, profile: str, data_dir: Path) -> list[str]:
    if profile == "smoke":
        return []
    missing = []
    for experiment in NOTEBOOKS[name].experiments:
        dataset = EXPERIMENTS[experiment].dataset
        if not (data_dir / DATASETS[dataset].folder).exists():
            missing.append(f"data set {dataset!r} not found in {data_dir}; fetch with: "
                           f"{fetch_command(dataset, data_dir)}")
    return sorted(set(missing))


def _cmd_notebook(args: argparse.Namespace) -> int:
    from .cli import parse_assignments

    names = list(NOTEBOOKS) if args.all else args.names
    if not names:
        print("error: name a notebook or pass --all; notebooks: " + ", ".join(NOTEBOOKS), file=sys.stderr)
        return 2
    return _run_many(names, args.profile, parse_assignments(args.param), Path(args.results_dir),
                     Path(args.data_dir), args.in_place)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from .cli import parse_assignments

    unknown = [t for t in args.tables if t not in TABLES]
    if unknown:
        print(f"error: unknown table(s) {unknown}; tables: {', '.join(TABLES)}", file=sys.stderr)
        return 2
    tables = args.tables or TABLES
    return _run_many([*tables, "summary"], args.profile, parse_assignments(args.param), Path(args.results_dir),
                     Path(args.data_dir))


def _run_many(names: list[str], profile: str, extra: dict[str, Any], results_dir: Path, data_dir: Path,
              in_place: bool = False) -> int:
    from papermill.exceptions import PapermillExecutionError

    failed = []
    for name in names:
        if name not in NOTEBOOKS:
            print(f"error: unknown notebook {name!r}; notebooks: {', '.join(NOTEBOOKS)}", file=sys.stderr)
            failed.append(name)
            continue
        missing = _missing_data(name, profile, data_dir)
        if missing:
            print(f"skipped {name}: " + "; ".join(missing))
            continue
        params = {k: v for k, v in extra.items() if k in NOTEBOOKS[name].parameters or name != "summary"}
        print(f"running {name} ({profile}) ...", flush=True)
        try:
            output = _execute(name, profile, params, results_dir, data_dir, in_place)
        except ValueError as err:
            print(f"error in notebook {name}: {err}", file=sys.stderr)
            failed.append(name)
        except PapermillExecutionError as err:
            print(f"notebook {name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}", file=sys.stderr)
            failed.append(name)
        else:
            print(f"  -> {output} (metrics and figures beside it)")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def add_notebook_commands(sub: argparse._SubParsersAction) -> None:
    for command, helptext in (("notebook", "execute notebooks with papermill (profile and -p overrides)"),
                              ("reproduce", "execute the table notebooks (all, or those named) and the summary")):
        p = sub.add_parser(command, help=helptext)
        if command == "notebook":
            p.add_argument("names", nargs="*", help=f"notebooks: {', '.join(NOTEBOOKS)}")
            p.add_argument("--all", action="store_true")
            p.add_argument("--in-place", action="store_true",
                           help="execute with the notebook's own defaults and overwrite it (to commit outputs)")
            p.set_defaults(func=_cmd_notebook)
        else:
            p.add_argument("tables", nargs="*", help=f"tables: {', '.join(TABLES)}")
            p.set_defaults(func=_cmd_reproduce)
        p.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
        p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
        p.add_argument("--data-dir", default="data")
        p.add_argument("--results-dir", default="results")

