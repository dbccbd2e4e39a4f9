"""A run's checkpoint: where it stands (:class:`RunState`), saved atomically with one model, the optimizer and the
RNG states after every epoch and every pruning step, read back with errors that name the file; and the way back
when it is lost: every finished iteration keeps its model, its metrics row and its RNG states
(``iterations/XX/``), so a deleted or corrupt checkpoint costs at most the iteration in flight."""

from __future__ import annotations

import itertools
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..common.files import atomic_write
from ..core.masks import load_pruned_state_dict
from ..pruning.metrics import layer_table

__all__ = ["CheckpointError", "Checkpoints", "RunState", "atomic_save", "load_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint could not be read (truncated or corrupt); the file is left as it is."""


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, synced, then renamed over it: never a half-written file."""
    atomic_write(path, writer=lambda f: torch.save(obj, f))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint, turning any read failure into a :class:`CheckpointError` naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for truncated / corrupt files
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: {err}); resume "
                              f"from the last finished iteration with: relief-nb repair {path.parent} (the "
                              "corrupt file is kept as checkpoint.corrupt.pt)") from err
    if not isinstance(state, dict) or "phase" not in state:
        raise CheckpointError(f"checkpoint {path} is not a relief_nb checkpoint")
    return state


@dataclass
class RunState:
    """Where a run stands; saved in ``checkpoint.pt`` beside one model, the optimizer and the RNG states."""

    phase: str = "pretrain"  # "pretrain", "prune" or "retrain"
    iteration: int = 0
    epoch: int = 0  # epochs done in the current training stage
    optimizer: dict | None = None
    scheduler: dict | None = None
    best_val: float | None = None  # best validation accuracy of the stage; its model is best.pt
    rows: list[dict] = field(default_factory=list)  # metrics.csv
    layers: list[dict] = field(default_factory=list)  # layers.csv
    elapsed: float = 0.0
    before: dict | None = None  # accuracies right after pruning, before retraining
    done: bool = False  # nothing left to do for the stopping rules it last ran under
    stopped_early: bool = False  # the tolerance rule ended it: no later iteration will be made

    def start_stage(self, phase: str) -> None:
        self.phase, self.epoch, self.optimizer, self.scheduler, self.best_val = phase, 0, None, None, None

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> RunState:
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name in state})


def _repaired_milestones(milestones: Any) -> Any:
    """MultiStepLR milestones as older checkpoints stored them: ``Counter({30: 1})`` saved through
    ``dataclasses.asdict`` became ``Counter({(30, 1): 1})``, once more per resumption; undo every layer."""
    while isinstance(milestones, Counter) and milestones and all(
            isinstance(k, tuple) and len(k) == 2 for k in milestones):
        milestones = Counter(dict(milestones.keys()))
    return milestones


class Checkpoints:
    """The part of :class:`~relief_nb.experiments.run.Run` that saves and restores ``checkpoint.pt``."""

    folder: Path
    iteration_folder: Callable[[int], Path]
    model: torch.nn.Module
    generator: torch.Generator
    device: torch.device

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    def finished(self) -> bool:
        """Whether the folder holds every iteration this config asks for (memory-mapped read of the checkpoint,
        so cheap; a missing or unreadable one counts as not finished and the run itself then reports it)."""
        try:
            saved = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False, mmap=True)
        except Exception:
            return False
        if not isinstance(saved, dict) or not saved.get("done"):
            return False
        state = RunState.from_checkpoint(saved)  # _wanted_last: the step loop's stopping rules (run.py)
        return state.stopped_early or (bool(state.rows) and state.rows[-1]["iteration"] >= self._wanted_last(
            state.rows))

    def _rng_states(self) -> dict[str, Any]:
        states = {"rng": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            states["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return states

    def _set_rng_states(self, saved: dict[str, Any]) -> None:
        torch.set_rng_state(saved["rng"])
        self.generator.set_state(saved["generator"])
        if "cuda_rng" in saved and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)

    def _save_iteration(self, k: int, row: dict[str, Any]) -> None:
        """``iterations/XX/``: the model, its metrics row and the RNG states the next iteration starts from
        (what a lost checkpoint is rebuilt from, :meth:`_recover`); ``metrics.json`` last, as the mark of a
        complete folder."""
        from .results import json_row

        folder = self.iteration_folder(k)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_save(self.model.state_dict(), folder / "model.pt")
        atomic_save(self._rng_states(), folder / "rng.pt")
        atomic_write(folder / "metrics.json", json_row(row))

    def _resume_state(self) -> RunState | None:
        """Where to go on: ``checkpoint.pt``; if it is gone, the last finished iteration (:meth:`_recover`); None
        when there is nothing to go on from. A corrupt checkpoint raises :class:`CheckpointError` naming the
        repair command."""
        if self.checkpoint_path.exists():
            return self._restore(load_checkpoint(self.checkpoint_path))
        state = self._recover()
        if state is not None:
            self._save(state)
            warnings.warn(f"{self.checkpoint_path} is missing: resumed from iteration {state.rows[-1]['iteration']}, "
                          "the last finished one (the iteration in flight, if any, is made again)", stacklevel=3)
        return state

    def repair(self) -> str:
        """Rebuild what a damaged run folder lost, losing nothing that is intact: a corrupt checkpoint is moved
        to ``checkpoint.corrupt.pt`` and the run rebuilt from its last finished iteration; ``metrics.csv``,
        ``metrics.json`` and ``layers.csv`` are rewritten from the state. Returns what was done, in one line."""
        from .folder import run_lock

        self._setup()
        with run_lock(self.folder):
            done = []
            state = None
            if self.checkpoint_path.exists():
                try:
                    state = self._restore(load_checkpoint(self.checkpoint_path))
                except CheckpointError:
                    os.replace(self.checkpoint_path, self.folder / "checkpoint.corrupt.pt")
                    done.append("moved the corrupt checkpoint to checkpoint.corrupt.pt")
            if state is None:
                state = self._recover()
                if state is None:
                    raise CheckpointError(f"{self.folder} holds no finished iteration to rebuild the run from; "
                                          "start it over with relief-nb run ... --restart")
                self._save(state)
                done.append(f"rebuilt checkpoint.pt from iteration {state.rows[-1]['iteration']}")
            self._write_metrics(state.rows, state.layers, state.stopped_early)
            done.append(f"rewrote metrics.csv, metrics.json and layers.csv ({len(state.rows)} iterations)")
            return f"repaired {self.folder}: " + "; ".join(done)

    def _recover(self) -> RunState | None:
        """The state right after the last finished iteration, from ``iterations/XX/`` (model, metrics row, RNG
        states): equal to the checkpoint written then, so the run goes on as if never interrupted. Iterations are
        read in order up to the first incomplete or unreadable one; the layer table is recomputed from each
        model. None if iteration 0 (the pretrained model) is not there."""
        rows: list[dict] = []
        layers: list[dict] = []
        rng = None
        for k in itertools.count():
            folder = self.iteration_folder(k)
            try:
                row = json.loads((folder / "metrics.json").read_text())
                weights = torch.load(folder / "model.pt", map_location="cpu")
                states = torch.load(folder / "rng.pt", map_location="cpu") if (folder / "rng.pt").exists() else None
            except Exception:  # missing, truncated or corrupt: the iterations before it are what is intact
                break
            load_pruned_state_dict(self.model, weights)
            rows.append(row)
            layers += [{"iteration": k, **r} for r in layer_table(self.model, self.graph).to_dict("records")]
            rng = states
        if not rows:
            return None
        if rng is None:
            warnings.warn(f"{self.folder}: iteration {rows[-1]['iteration']} was saved without its random state "
                          "(an older relief_nb): the iterations made from here differ from an uninterrupted run",
                          stacklevel=3)
        else:
            self._set_rng_states(rng)
        info = self.folder / "run.json"
        stopped = bool(json.loads(info.read_text()).get("stopped_early")) if info.exists() else False
        last = rows[-1]["iteration"]
        state = RunState(phase="prune", iteration=last + 1, rows=rows, layers=layers, stopped_early=stopped)
        if stopped or last >= self._wanted_last(rows):
            state.iteration, state.done = last, True
        return state

    def _save(self, state: RunState) -> None:
        # not dataclasses.asdict: it rebuilds a dict subclass from its items, which turns MultiStepLR's milestones
        # Counter({30: 1}) into Counter({(30, 1): 1}), and a resumed run then never decays its learning rate
        saved: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state)}
        saved["model"] = self.model.state_dict()
        saved.update(self._rng_states())
        atomic_save(saved, self.checkpoint_path)

    def _restore(self, saved: dict[str, Any]) -> RunState:
        load_pruned_state_dict(self.model, saved["model"])
        self._set_rng_states(saved)
        # relief_nb 0.1 kept the initial and the best model inside every checkpoint
        if saved.get("init") is not None and not (self.folder / "init.pt").exists():
            atomic_save(saved["init"], self.folder / "init.pt")
        if saved.get("best_model") is not None:
            atomic_save(saved["best_model"], self.folder / "best.pt")
        state = RunState.from_checkpoint(saved)
        if state.scheduler is not None:
            state.scheduler["milestones"] = _repaired_milestones(state.scheduler.get("milestones"))
        return state
