"""Where things live: every folder and file name of data, runs, notebooks and figures, in one place.

Layout under a results folder (``results/`` beside ``data/`` by default)::

    results/                      real runs (profiles ``cpu`` and ``paper``)
        runs/<run name>/          one experiment (see relief_nb.experiment), shared by every notebook and
                                  ``relief-nb run``: a run named by its hyperparameters is never run twice
        <notebook>/               an executed notebook, its tables (csv/json) and figures/
    results/smoke/                the same for the ``smoke`` profile, kept apart from real results
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DATA_ENV",
    "RESULTS_ENV",
    "TEMPLATE_DIR",
    "default_data_dir",
    "default_results_dir",
    "notebook_folder",
    "profile_root",
    "runs_folder",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"  # the notebooks' sources, shipped in the wheel
DATA_ENV = "RELIEF_NB_DATA_DIR"
RESULTS_ENV = "RELIEF_NB_RESULTS_DIR"


def _project_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) that has a ``data/`` folder."""
    here = (start or Path.cwd()).resolve()
    return next((p for p in (here, *here.parents) if (p / "data").is_dir()), None)


def default_data_dir() -> Path:
    """``$RELIEF_NB_DATA_DIR``, else the ``data/`` folder of the project the working directory is in
    (so a notebook opened in ``notebooks/`` and a command run from the repository root find the same data),
    else ``./data``."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    root = _project_root()
    return (root or Path.cwd()) / "data"


def default_results_dir() -> Path:
    """``$RELIEF_NB_RESULTS_DIR``, else ``results/`` beside the data folder found as in :func:`default_data_dir`."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    root = _project_root()
    return (root or Path.cwd()) / "results"


def profile_root(results_dir: str | os.PathLike, profile: str) -> Path:
    """Smoke outputs live apart (``results/smoke``) so that they never mix with real results."""
    return Path(results_dir) / "smoke" if profile == "smoke" else Path(results_dir)


def runs_folder(results_dir: str | os.PathLike, profile: str) -> Path:
    return profile_root(results_dir, profile) / "runs"


def notebook_folder(results_dir: str | os.PathLike, profile: str, notebook: str) -> Path:
    return profile_root(results_dir, profile) / notebook
