"""A run's results files: ``metrics.csv``/``metrics.json`` (one row per iteration), ``layers.csv`` (one row per
layer and iteration), ``run.json`` (provenance), and reading them back with the model of any iteration."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..common.files import atomic_write
from ..core.masks import load_pruned_state_dict
from ..graph.structure import PruningGraph
from ..pruning.metrics import layer_table, summary
from .config import ExperimentConfig
from .training import evaluate

__all__ = ["ResultsFileError", "RunResults", "json_row", "read_results_csv"]


class ResultsFileError(RuntimeError):
    """A run's results file is empty or unreadable; the message names it and the command that rebuilds it."""


def read_results_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` of a run's ``metrics.csv`` / ``layers.csv``, a damaged file named with its repair command."""
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ResultsFileError(f"results file {path} is empty or corrupt ({type(err).__name__}: {err}); rebuild it "
                               f"from the run's checkpoint with: relief-nb repair {path.parent}") from err


def json_row(row: dict[str, Any]) -> str:
    return json.dumps({k: v.item() if hasattr(v, "item") else v for k, v in row.items()}, indent=1)


@functools.cache
def _git_commit() -> str | None:
    """The commit of the relief_nb checkout this process runs (read once: the code it imported; None when
    installed from a wheel)."""
    root = Path(__file__).resolve().parents[2]  # the checkout holding relief_nb/
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class RunResults:
    """The part of :class:`~relief_nb.experiments.run.Run` that measures the model and writes and reads results."""

    config: ExperimentConfig
    folder: Path
    model: torch.nn.Module
    graph: PruningGraph
    device: torch.device
    meta: dict[str, Any]

    def _measure(self) -> dict[str, Any]:
        ds = self._data()
        return {
            "val_acc": evaluate(self.model, self.val_x, self.val_y, ds, self.device),
            "test_acc": evaluate(self.model, self.test_x, self.test_y, ds, self.device),
        }

    def _record(self, iteration: int, before: dict[str, Any] | None, wall: float) -> tuple[dict, list[dict]]:
        after = self._measure()
        row: dict[str, Any] = {"iteration": iteration}
        row["val_acc_before"] = before["val_acc"] if before else after["val_acc"]
        row["test_acc_before"] = before["test_acc"] if before else after["test_acc"]
        row.update(after)
        row["test_error"] = 1 - after["test_acc"]
        row.update(summary(self.model, self.graph))
        row["wall_time_s"] = wall
        table = layer_table(self.model, self.graph)
        layers = [{"iteration": iteration, **r} for r in table.to_dict("records")]
        return row, layers

    def _write_metrics(self, rows: list[dict], layers: list[dict], stopped_early: bool) -> None:
        df = pd.DataFrame(rows)
        atomic_write(self.folder / "metrics.csv", df.to_csv(index=False))
        atomic_write(self.folder / "metrics.json", df.to_json(orient="records", indent=1))
        atomic_write(self.folder / "layers.csv", pd.DataFrame(layers).to_csv(index=False))
        self._write_provenance(stopped_early=stopped_early)

    def _write_provenance(self, **extra: Any) -> None:
        from ..common.version import __version__

        path = self.folder / "run.json"
        info = json.loads(path.read_text()) if path.exists() else {}
        info.update(synthetic=self.config.data.synthetic, device=str(self.device), data=self._data().name,
                    data_fingerprint=self.data_fingerprint(), model_fingerprint=self._model_weights(),
                    relief_nb=__version__, torch=torch.__version__, **self.meta, **extra)
        commits = info.setdefault("git_commits", [])  # the code of every process that worked on the run, in order
        if _git_commit() not in commits:
            commits.append(_git_commit())
        info.setdefault("stopped_early", False)
        atomic_write(path, json.dumps(info, indent=2))

    def _results_readable(self) -> bool:
        """Whether ``metrics.csv`` and ``layers.csv`` exist and read back (a run resumed or read back rewrites them
        if not)."""
        if not all((self.folder / name).exists() for name in ("metrics.csv", "layers.csv", "metrics.json")):
            return False
        try:
            self.layers()  # reads metrics.csv too
        except ResultsFileError:
            return False
        return True

    def metrics(self) -> pd.DataFrame:
        """One row per iteration, up to the last one this config's stopping rules ask for (a longer run of the
        same settings may have made more)."""
        path = self.folder / "metrics.csv"
        if not path.exists():
            return pd.DataFrame()
        df = read_results_csv(path)
        if "iteration" not in df.columns:
            raise ResultsFileError(f"results file {path} has no iteration column (not a relief_nb metrics.csv); "
                                   f"rebuild it from the run's checkpoint with: relief-nb repair {path.parent}")
        return df[df.iteration <= self._wanted_last(df.to_dict("records"))].reset_index(drop=True)

    def layers(self) -> pd.DataFrame:
        path = self.folder / "layers.csv"
        if not path.exists():
            return pd.DataFrame()
        df = read_results_csv(path, dtype={"layer": str})
        metrics = self.metrics()
        last = metrics.iteration.max() if len(metrics) else -1
        return df[df.iteration <= last].reset_index(drop=True)

    def load_model(self, iteration: int | None = None) -> torch.nn.Module:
        """The pruned model after ``iteration`` (default: the last one this config asks for), masks installed."""
        if iteration is None:
            metrics = self.metrics()
            iteration = int(metrics.iteration.max()) if len(metrics) else 0
        path = self.iteration_folder(iteration) / "model.pt"
        model = self._build_model(self._data())
        load_pruned_state_dict(model, torch.load(path, map_location="cpu"))
        return model
