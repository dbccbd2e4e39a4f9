"""A run's folder: its name (a hash of what defines its results), the lock that keeps a twin out, the folders
of its iterations and of the NNrelief run a baseline follows, and the migration of older layouts."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..common.files import atomic_write
from ..common.paths import inside
from ..data.datasets import DATASETS
from ..models.zoo import MODELS
from .config import ExperimentConfig
from .results import json_row

__all__ = ["RunFolder", "run_lock"]


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` for the duration: a second process on the same run waits (and says for whom),
    then finds the run's files as the first left them (an OS lock, released even if its holder is killed)."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): runs are not protected against a concurrent twin
        yield
        return
    with open(folder / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            print(f"run {folder.name} is already running (pid {holder}); waiting for it", file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class RunFolder:
    """The part of :class:`~relief_nb.experiments.run.Run` that names and finds its folders."""

    config: ExperimentConfig
    results_dir: Path
    _label: str | None
    _folder: Path | None
    _user_data: object
    _factory: object

    @property
    def label(self) -> str:
        return self._label or f"{self.folder.parent.name}/{self.folder.name}"

    def run_name(self) -> str:
        """``<experiment>/seed_<seed>`` (:meth:`ExperimentConfig.run_name` with this run's fingerprints)."""
        return self.config.run_name(self.data_fingerprint(), self._model_weights())

    def experiment_name(self) -> str:
        """The folder shared by this run's seeds (a baseline's ``reference`` names one)."""
        return self.config.experiment_name(self.data_fingerprint(), self._model_weights())

    @property
    def folder(self) -> Path:
        """``results_dir/<experiment>/seed_<seed>``; the name hashes the data read, so the data are loaded (once)
        to know it. An older folder of the same run is migrated to it first."""
        if self._folder is None:
            self._folder = inside(self.results_dir, self.results_dir / self.run_name(), "the run folder")
            self._migrate_names()
            self._migrate_iterations()
        return self._folder

    def iteration_folder(self, k: int) -> Path:
        """``iterations/XX/``: the model after iteration ``k`` (``model.pt``, masks included) and its metrics row."""
        return self.folder / "iterations" / f"{k:02d}"

    def _reference_folder(self) -> Path:
        """The NNrelief run a baseline follows: ``<runs>/<reference>/seed_<seed>`` for an experiment's name,
        ``<runs>/<reference>`` for ``<experiment>/seed_<k>`` (checked by
        :class:`~relief_nb.experiments.config.MethodConfig`)."""
        ref = Path(self.config.method.reference or "")
        runs = self.folder.parent.parent
        folder = runs / ref if len(ref.parts) > 1 else runs / ref / f"seed_{self.config.seed}"
        return inside(runs, folder, "the reference run")

    def _migrate_names(self) -> None:
        """A folder of this run under an older name is moved to today's: relief_nb 0.1's (every setting hashed;
        registered models and data only, which the data are then assumed to be) or 0.2 development's (flat)."""
        target = self._folder
        if target.exists():
            return
        cfg = self.config
        older = [cfg.interim_run_name(self.data_fingerprint(), self._model_weights())]
        if self._user_data is None and self._factory is None and cfg.model in MODELS and cfg.data.name in DATASETS:
            older.append(cfg.legacy_run_name())
        for name in older:
            source = self.results_dir / name
            if (source / "config.json").exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(source, target)
                # the same settings, written as today's config (a baseline's reference is now its new name)
                atomic_write(target / "config.json", json.dumps(cfg.to_dict(), indent=2))
                print(f"migrated run folder {name} -> {target.parent.name}/{target.name} (an older layout; runs are "
                      "now named by their settings and data, seeds are folders)", file=sys.stderr)
                return

    def _migrate_iterations(self) -> None:
        """0.1 kept ``masks/iter_XX.pt``; iterations are now folders ``iterations/XX/`` (model.pt, metrics.json)."""
        old = self._folder / "masks"
        if not old.is_dir():
            return
        for path in sorted(old.glob("iter_*.pt")):
            k = int(path.stem.split("_")[1])
            (self._folder / "iterations" / f"{k:02d}").mkdir(parents=True, exist_ok=True)
            os.replace(path, self.iteration_folder(k) / "model.pt")
        metrics = self._folder / "metrics.csv"
        if metrics.exists():
            for row in pd.read_csv(metrics).to_dict("records"):
                folder = self.iteration_folder(int(row["iteration"]))
                if folder.is_dir():
                    atomic_write(folder / "metrics.json", json_row(row))
        if not any(old.iterdir()):
            old.rmdir()
