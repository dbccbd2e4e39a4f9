"""Where things live: every folder and file name of data, runs, notebooks and figures, in one place.

Layout under a results folder (``results/`` beside ``data/`` by default)::

    results/                      real runs (profiles ``cpu`` and ``paper``)
        runs/<run name>/          one experiment (see relief_nb.experiments.run), shared by every notebook and
                                  ``relief-nb run``: a run named by its hyperparameters is never run twice
        <notebook>/               an executed notebook, its tables (csv/json) and figures/
    results/smoke/                the same for the ``smoke`` profile, kept apart from real results
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = [
    "DATA_ENV",
    "RESULTS_ENV",
    "TEMPLATE_DIR",
    "default_data_dir",
    "default_results_dir",
    "inside",
    "safe_name",
    "notebook_folder",
    "profile_root",
    "runs_folder",
    "sweep_folder",
]

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "templates"  # the notebooks, shipped in the wheel
DATA_ENV = "RELIEF_NB_DATA_DIR"
RESULTS_ENV = "RELIEF_NB_RESULTS_DIR"


NAME_MAX = 255  # bytes in one path component on the file systems torch and this package run on (ext4, xfs, APFS)


def safe_name(name: object, what: str, suffix: str = "", example: str = "lenet300-paper") -> str:
    """``name`` as one path component under a folder of ours, or a ``ValueError`` naming ``what`` (the option or
    parameter that gave it, e.g. ``"--name"``) and how to fix it.

    A name is never a path: refused are an empty name, ``.`` and ``..``, a separator (``/`` and ``\\`` on every
    OS), an absolute or drive path, control characters, and a name that with ``suffix`` (the extension the caller
    appends) is longer than ``NAME_MAX`` bytes. Letters of any script, digits, ``-_.+`` and spaces pass unchanged,
    so existing folders keep their names."""
    def refuse(why: str) -> ValueError:
        return ValueError(f"{what} {name!r} is not a plain name: {why}; give a name such as {example!r} "
                          "(a name is one folder or file, never a path)")

    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, not {type(name).__name__} {name!r}")
    if not name.strip():
        raise refuse("it is empty")
    if name in (".", ".."):
        raise refuse("it names a folder itself")
    if "/" in name or "\\" in name:
        raise refuse("it contains a path separator")
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise refuse("it is an absolute path")
    bad = next((c for c in name if unicodedata.category(c).startswith("C")), None)
    if bad is not None:
        raise refuse(f"it contains the control character U+{ord(bad):04X}")
    if len((name + suffix).encode("utf-8")) > NAME_MAX:
        raise refuse(f"it is longer than the file system allows ({NAME_MAX} bytes with {suffix or 'no suffix'})")
    return name


def inside(root: str | os.PathLike, target: str | os.PathLike, what: str = "the target") -> Path:
    """``target`` if it lies in ``root`` (both resolved, symbolic links followed), else a ``ValueError``: the
    last line of defence of every writer, so that a caller that forgot :func:`safe_name` still cannot write
    outside the results (or data) folder."""
    base, path = Path(root).resolve(), Path(target).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{what} {str(target)!r} lies outside {str(root)!r}; relief_nb writes only inside it")
    return Path(target)


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
    root = profile_root(results_dir, profile)
    return inside(root, root / safe_name(notebook, "notebook name"), "the notebook folder")


def sweep_folder(results_dir: str | os.PathLike | None, profile: str, name: str) -> Path:
    """Where a sweep's tables and figures go: ``<results>/sweeps/<name>`` (``<results>/smoke/sweeps`` for smoke)."""
    root = profile_root(results_dir or default_results_dir(), profile) / "sweeps"
    return inside(root, root / safe_name(name, "sweep name (--name, or name = in a grid file)"), "the sweep folder")
