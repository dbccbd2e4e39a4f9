"""A run's checkpoint: where it stands (:class:`RunState`), saved atomically with one model, the optimizer and the
RNG states after every epoch and every pruning step, read back with errors that name the file."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..common.files import atomic_write
from ..core.masks import load_pruned_state_dict

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
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(err).__name__}: {err}); "
                              "delete it to restart the run, or restore it from a backup") from err
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

    def _save(self, state: RunState) -> None:
        # not dataclasses.asdict: it rebuilds a dict subclass from its items, which turns MultiStepLR's milestones
        # Counter({30: 1}) into Counter({(30, 1): 1}), and a resumed run then never decays its learning rate
        saved: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state)}
        saved["model"] = self.model.state_dict()
        saved["rng"] = torch.get_rng_state()
        saved["generator"] = self.generator.get_state()
        if self.device.type == "cuda":
            saved["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        atomic_save(saved, self.checkpoint_path)

    def _restore(self, saved: dict[str, Any]) -> RunState:
        load_pruned_state_dict(self.model, saved["model"])
        torch.set_rng_state(saved["rng"])
        self.generator.set_state(saved["generator"])
        if "cuda_rng" in saved and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        # relief_nb 0.1 kept the initial and the best model inside every checkpoint
        if saved.get("init") is not None and not (self.folder / "init.pt").exists():
            atomic_save(saved["init"], self.folder / "init.pt")
        if saved.get("best_model") is not None:
            atomic_save(saved["best_model"], self.folder / "best.pt")
        state = RunState.from_checkpoint(saved)
        if state.scheduler is not None:
            state.scheduler["milestones"] = _repaired_milestones(state.scheduler.get("milestones"))
        return state
