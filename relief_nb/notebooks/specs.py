"""The notebooks readers open, as data: each one's template, the experiments it runs, the parameters it takes with
their types (:data:`NOTEBOOKS`, :data:`PARAMETER_TYPES`), and the check of a notebook's parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common import paths
from ..experiments.presets import EXPERIMENTS, PROFILES

__all__ = ["NOTEBOOKS", "PARAMETER_TYPES", "TABLES", "NotebookSpec", "check_parameters"]


_RUN_PARAMETERS = ("profile", "seed", "device", "data_dir", "results_dir", "alpha_conv", "alpha_fc", "iterations",
                   "pretrain_epochs", "retrain_epochs", "progress")


@dataclass(frozen=True)
class NotebookSpec:
    """A notebook readers open: its template, the experiments it runs, the parameters it takes."""

    name: str
    title: str
    template: str
    experiments: tuple[str, ...] = ()
    parameters: tuple[str, ...] = field(default=(*_RUN_PARAMETERS, "baselines", "baseline_iterations"))
    gallery_profile: str = "cpu"  # the profile of the outputs committed in notebooks/ (real data where it exists)
    gallery_params: tuple[tuple[str, Any], ...] = ()  # parameters of the committed outputs, beside the profile

    @property
    def path(self) -> Path:
        return paths.TEMPLATE_DIR / f"{self.template}.ipynb"

    @property
    def is_table(self) -> bool:
        return self.template == "table"

    def injected(self) -> dict[str, Any]:
        """Parameters that select this entry in a shared template."""
        return {"table": self.name} if self.is_table else {}


NOTEBOOKS: dict[str, NotebookSpec] = {nb.name: nb for nb in [
    NotebookSpec("tour", "Guided tour: what NNrelief does, on LeNet-300-100 and real MNIST", "tour",
                 ("lenet300-mnist",), _RUN_PARAMETERS),
    # the gallery's LeNet table leaves the baselines to the sweep notebook (three seeds, four alphas)
    NotebookSpec("lenet-mnist", "Table: LeNet-300-100 and LeNet-5 on MNIST", "table",
                 ("lenet300-mnist", "lenet5-mnist"), gallery_params=(("baselines", False),)),
    NotebookSpec("cifar10", "Table: VGG-like (Adam) and ResNet-20 (SGD) on CIFAR-10", "table",
                 ("vgglike-cifar10", "resnet20-cifar10"), gallery_profile="smoke"),
    NotebookSpec("cifar100", "Table: ResNet-56 on CIFAR-100", "table", ("resnet56-cifar100",),
                 gallery_profile="smoke"),
    NotebookSpec("tiny-imagenet", "Table: VGG-19 and ResNet-18 on Tiny-ImageNet", "table",
                 ("vgg19-tiny", "resnet18-tiny"), gallery_profile="smoke"),
    NotebookSpec("summary", "Summary: every run's results beside the published numbers", "summary", (),
                 ("profile", "results_dir")),
    NotebookSpec("sweep", "Sweep: NNrelief and baselines over alphas and seeds, on Dask", "sweep", (),
                 ("experiment", "alpha_fc", "seeds", "methods", "profile", "params", "scheduler", "results_dir",
                  "data_dir"),
                 # the README's sweep (sweeps/lenet300-mnist.toml), whose runs `relief-nb sweep` made
                 gallery_params=(("alpha_fc", [0.8, 0.9, 0.95, 0.99]), ("seeds", [0, 1, 2]), ("params", {
                     "iterations": 5, "pretrain_epochs": 8, "pretrain_milestones": [6], "retrain_epochs": 4,
                     "retrain_milestones": [3], "target_compression": None}))),
]}


TABLES = [name for name, nb in NOTEBOOKS.items() if nb.is_table]


# name -> (allowed types, description); None stands for "use the profile's value" (or the default folder)
PARAMETER_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "profile": ((str,), f"one of {', '.join(PROFILES)}"),
    "seed": ((int,), "integer seed"),
    "device": ((str,), "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    "data_dir": ((str, type(None)), "folder holding the data sets (None: data/ of this project)"),
    "results_dir": ((str, type(None)), "folder for run folders, figures and tables (None: results/ beside data/)"),
    "alpha_conv": ((float, int, list, type(None)), "fraction in (0, 1], None, or a list of them (sweep)"),
    "alpha_fc": ((float, int, list, type(None)), "fraction in (0, 1], None, or a list of them (sweep)"),
    "experiment": ((str, list), "a preset name (relief-nb list) or a list of them"),
    "seeds": ((int, list), "a seed or a list of seeds"),
    "methods": ((str, list), "relief, magnitude_global, magnitude_layer, random, or a list of them"),
    "params": ((dict,), "other ExperimentConfig settings, e.g. {'iterations': 5}"),
    "scheduler": ((str, type(None)), "None (a local Dask cluster) or 'tcp://host:port'"),
    "iterations": ((int, type(None)), "integer >= 0 or None"),
    "pretrain_epochs": ((int, type(None)), "integer >= 0 or None"),
    "retrain_epochs": ((int, type(None)), "integer >= 0 or None"),
    "progress": ((bool, str), "True, False or 'auto' (bars unless profile is smoke)"),
    "baseline_iterations": ((int, type(None)), "iterations of the baselines (None: as many as NNrelief)"),
    "baselines": ((bool, list, tuple), "True, False, or a list of this notebook's experiments to run the "
                  "magnitude and random baselines for"),
}


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
