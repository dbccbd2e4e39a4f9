"""The iterative NNrelief experiment: pretrain, then score -> prune -> rewind / fine-tune -> retrain.

A run is identified, as in OpenLTH, by a hash of the settings that change its results: the settings that differ
from :class:`ExperimentConfig`'s defaults, the fingerprint of the data actually read and, for a model of your own,
of its initial weights. Stopping rules (``iterations``, ``target_compression``) are not part of it: a longer run
continues the shorter one's folder, and a shorter one reads the first iterations back. Seeds and iterations are
folders: ``<runs>/<experiment>/seed_<k>/`` holds ``config.json``, ``run.json`` (provenance: package version, git
commits, data fingerprint, preset and profile), ``metrics.csv`` / ``metrics.json`` (one row per iteration),
``layers.csv`` (one row per layer and iteration), ``init.pt`` (the initial weights, written once),
``iterations/XX/`` (``model.pt``, the model after iteration XX with its masks, and ``metrics.json``, its row),
``best.pt`` (the best-validation model of the stage in flight) and ``checkpoint.pt`` (one model, the optimizer and
the typed :class:`RunState`), each replaced atomically after every epoch and every pruning step, so an
interruption loses at most the epoch in flight and :func:`run_experiment` resumes where it stopped.

:class:`Run` is this module's step loop, put together with its parts: :class:`~.folder.RunFolder` (names, lock,
migration), :class:`~.inputs.RunInputs` (data, model, the reference run), :class:`~.checkpoints.Checkpoints` and
:class:`~.results.RunResults` (metrics, layers, provenance, models read back).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..common.files import atomic_write
from ..core.masks import load_pruned_state_dict
from ..graph.compact import CompactModel
from ..pruning.methods import ReliefMethod
from .checkpoints import Checkpoints, RunState, atomic_save
from .config import ExperimentConfig
from .devices import resolve_device
from .factories import ModelFactory
from .folder import RunFolder, run_lock
from .inputs import RunInputs
from .results import RunResults
from .training import TrainConfig, TrainingDiverged, evaluate, make_optimizer, train_epoch

__all__ = ["Run", "run_experiment"]


class Run(RunFolder, RunInputs, Checkpoints, RunResults):
    """One experiment in its folder. :meth:`run` executes (or resumes) it; results are then in the folder.

    ``data``: your own data (anything :func:`relief_nb.as_dataset` takes: tensors, torch Datasets, a folder), with
    ``config.data.name`` as its label; default: the registered data set ``config.data.name`` from ``data_dir``.
    ``model``: a factory of your own (called with the keywords it declares among ``num_classes``,
    ``input_shape``, ``in_channels``), with ``config.model`` as its label; default: the registry, or
    ``config.model`` as ``"package.module:function"``. ``meta``: provenance recorded in ``run.json`` (preset,
    profile). Nothing is read or written until needed, and nothing written before every input is checked.
    """

    def __init__(self, config: ExperimentConfig, results_dir: str | os.PathLike = "results",
                 data_dir: str | os.PathLike = "data", device: str | torch.device | None = "auto",
                 progress: bool | str = True, data: Any = None, label: str | None = None,
                 model: ModelFactory | None = None, meta: dict[str, Any] | None = None,
                 dataset: Any = None) -> None:
        self.config = config
        self.results_dir = Path(results_dir)
        self.data_dir = Path(data_dir)
        self.device = resolve_device(device)
        self.progress = progress  # True: progress bars; "text": plain lines every 30 s (logs, papermill); False
        self._label = label
        self._user_data = data if data is not None else dataset  # ``dataset=``: the 0.1 keyword
        if model is not None and not callable(model):
            raise TypeError(f"model must be a factory (a callable returning an nn.Module), got {type(model).__name__}")
        self._factory = model
        self.meta = dict(meta or {})
        self._dataset = None
        self._folder = None
        self._model_fingerprint = None
        self._user_data_fingerprint = None
        self._device_copies = {}
        self._teacher_model = None

    @classmethod
    def at(cls, folder: str | os.PathLike, config: ExperimentConfig | None = None,
           data_dir: str | os.PathLike = "data") -> Run:
        """The run stored in ``folder``, for reading its results (no data are loaded; :meth:`load_model` reads
        ``data_dir`` to rebuild the model)."""
        folder = Path(folder)
        if config is None:
            config = ExperimentConfig.from_dict(json.loads((folder / "config.json").read_text()))
        run = cls(config, folder.parent.parent, data_dir, progress=False, device="cpu")
        run._folder = folder
        run._migrate_iterations()
        return run

    # ------------------------------------------------------------------ the schedule
    def run(self, resume: bool = True, stop_after_epochs: int | None = None) -> pd.DataFrame:
        """Execute the experiment (resuming from ``checkpoint.pt`` if present) and return its metrics.

        ``stop_after_epochs`` interrupts the run after that many epochs (for tests of resumption).
        """
        self._stop_after_epochs = stop_after_epochs
        self._setup()  # data, labels, sizes, model, reference: every check that can fail runs before any write
        self.folder.mkdir(parents=True, exist_ok=True)
        with run_lock(self.folder):
            return self._run_locked(resume)

    def _run_locked(self, resume: bool) -> pd.DataFrame:
        cfg = self.config
        (self.folder / "iterations").mkdir(exist_ok=True)
        config_path = self.folder / "config.json"
        if not config_path.exists():
            atomic_write(config_path, json.dumps(self.config.to_dict(), indent=2))
        state = self._resume_state() if resume else None
        if state is not None:
            self._extend(state)
            if state.rows and not self._results_readable():  # an empty or corrupt results file: rewritten
                self._write_metrics(state.rows, state.layers, state.stopped_early)
        else:
            state = RunState()
            atomic_save(self.model.state_dict(), self.folder / "init.pt")  # the initial weights, once
            self._save(state)
        self._write_provenance()
        bar = self._bar(total=cfg.schedule.iterations + 1, desc=f"{self.label}: iterations", initial=len(state.rows),
                        disable=state.done)  # a finished run is read back without a bar
        try:
            while not state.done:
                self._step(state)
                bar.n = len(state.rows)
                bar.refresh()
        finally:
            bar.close()
        return self.metrics()

    def _wanted_last(self, rows: list[dict]) -> int:
        """The last iteration the stopping rules ask for, given the iterations made so far."""
        last = self._last_iteration()
        target = self.config.schedule.target_compression
        if target is not None:
            reached = [r["iteration"] for r in rows if r["compression"] >= target]
            if reached:
                last = min(last, reached[0])
        return last

    def _extend(self, state: RunState) -> None:
        """A finished run asked for more (a higher ``iterations`` or ``target_compression``) goes on from its
        last iteration: rewinding uses init.pt, pruning the last model, so the result equals a run that had
        asked for more from the start."""
        if not state.done or state.stopped_early or not state.rows:
            return
        last = state.rows[-1]["iteration"]
        if last < self._wanted_last(state.rows):
            state.done = False
            state.iteration = last + 1
            state.start_stage("prune")

    def _step(self, state: RunState) -> None:
        cfg = self.config
        if state.phase == "pretrain":
            if cfg.method.reference is not None:  # a baseline starts from the reference run's pretrained model
                load_pruned_state_dict(self.model, torch.load(self._reference_folder() / "iterations" / "00" /
                                                              "model.pt", map_location=self.device))
            else:
                self._train_stage(state, cfg.schedule.pretrain, "pretrain")
            self._finish_iteration(state)
        elif state.phase == "prune":
            start = time.perf_counter()
            if cfg.method.name == "relief":
                ReliefMethod(cfg.relief_at(state.iteration)).prune(self.graph, self.scoring_batch)
            else:
                self._prune_baseline(state.iteration)
            state.before = self._measure()
            if cfg.rewinds:
                self._rewind(torch.load(self.folder / "init.pt", map_location=self.device))
            state.start_stage("retrain")
            state.elapsed += time.perf_counter() - start
            self._save(state)
        elif state.phase == "retrain":
            self._train_stage(state, cfg.schedule.retrain, f"iteration {state.iteration}")
            self._finish_iteration(state)

    # ------------------------------------------------------------------ training stage
    def _train_stage(self, state: RunState, cfg: TrainConfig, label: str) -> None:
        """Run the remaining epochs of the current stage, checkpointing after each; keep the best-val model.

        After a pruning step the stage trains a compact copy (removed units sliced away,
        :mod:`relief_nb.graph.compact`) unless ``schedule.compact`` is off; the full model gets its weights after
        every epoch, and the checkpoint holds the optimizer state in the full model's layout either way."""
        ds = self._data()
        best_path = self.folder / "best.pt"
        compact = self._compact() if state.phase == "retrain" else None
        trainee = compact.model if compact is not None else self.model
        opt, sched = make_optimizer(trainee, cfg)
        if state.optimizer is not None:
            opt.load_state_dict(compact.optimizer_state_from_full(state.optimizer) if compact else state.optimizer)
            sched.load_state_dict(state.scheduler)
        bar = self._bar(range(state.epoch, cfg.epochs), desc=f"{self.label}: {label}", leave=False,
                        initial=state.epoch, total=cfg.epochs)
        for epoch in bar:
            start = time.perf_counter()
            loss = train_epoch(trainee, self.train_x, self.train_y, ds, cfg, opt, self.device, self.generator,
                               teacher=self._teacher() if state.phase == "retrain" else None)
            if not math.isfinite(loss):  # stop before this epoch is saved: the folder resumes from the last good one
                self._diverged(state, label, epoch, loss, opt.param_groups[0]["lr"])
            sched.step()
            val = evaluate(trainee, self.val_x, self.val_y, ds, self.device)
            if compact is not None:
                compact.write_back()
            if state.best_val is None or val > state.best_val:
                state.best_val = val
                atomic_save(self.model.state_dict(), best_path)  # before the checkpoint that points to it
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.4f}")
            state.epoch = epoch + 1
            state.optimizer = compact.optimizer_state_to_full(opt.state_dict()) if compact else opt.state_dict()
            state.scheduler = sched.state_dict()
            state.elapsed += time.perf_counter() - start
            self._save(state)
            if self._stop_after_epochs is not None:
                self._stop_after_epochs -= 1
                if self._stop_after_epochs <= 0:
                    raise KeyboardInterrupt("stopped on request (stop_after_epochs)")
        if state.best_val is not None:
            load_pruned_state_dict(self.model, torch.load(best_path, map_location=self.device))

    def _teacher(self) -> torch.nn.Module | None:
        """The dense network (iteration 0's model) retraining distils from when ``retrain_distill`` > 0."""
        if self.config.schedule.retrain.distill == 0:
            return None
        if self._teacher_model is None:
            teacher = self.load_model(0).to(self.device, memory_format=torch.channels_last)
            self._teacher_model = teacher.eval().requires_grad_(False)
        return self._teacher_model

    def _diverged(self, state: RunState, label: str, epoch: int, loss: float, lr: float) -> None:
        last = state.rows[-1]["iteration"] if state.rows else None
        kept = ("nothing is recorded yet" if last is None else "iteration 0 stays its result" if last == 0
                else f"iterations 0-{last} stay its result")
        stage = "pretrain" if state.phase == "pretrain" else "retrain"
        raise TrainingDiverged(
            f"training diverged in {self.label}, {label}, epoch {epoch + 1}: the loss is {loss} at learning rate "
            f"{lr:g}; the run folder keeps its last good epoch ({kept}). Try a lower learning rate "
            f"(-p {stage}_lr={lr / 10:g}), or check the data for NaN or inf")

    def _compact(self) -> CompactModel | None:
        """The compact copy to retrain, or None (turned off, nothing removed, or a model it cannot slice)."""
        if not self.config.schedule.compact:
            return None
        try:
            compact = CompactModel(self.model, self.graph)
            compact.check(self.graph.input_shape, self.scoring_batch[:8])
        except Exception as err:  # an optimisation only: any failure retrains the masked model, as before
            warnings.warn(f"compact retraining is off for this stage ({type(err).__name__}: {err}); the masked model "
                          "is retrained instead", stacklevel=2)
            return None
        return compact if compact.parameter_fraction() < 1 else None

    def _rewind(self, init: dict[str, torch.Tensor]) -> None:
        """Reset weights to their saved initial values, keeping the masks (LeNets, as in the paper)."""
        current = self.model.state_dict()  # tensors share storage with the model
        with torch.no_grad():
            for key, value in init.items():
                target = key if key in current else f"{key}_orig"
                if target in current and not key.endswith("_mask"):
                    current[target].copy_(value)

    def _finish_iteration(self, state: RunState) -> None:
        cfg = self.config
        k = state.iteration
        row, layers = self._record(k, state.before, state.elapsed)
        state.elapsed = 0.0
        stop = False
        if cfg.schedule.tolerance is not None and state.rows:
            baseline = state.rows[0]["val_acc"]
            if row["val_acc"] < baseline - cfg.schedule.tolerance:
                stop = True  # keep the last model within tolerance: iterations/{k-1}/, final.pt
        if not stop:
            state.rows.append(row)
            state.layers += layers
            self._save_iteration(k, row)
            atomic_save(self.model.state_dict(), self.folder / "final.pt")
        state.stopped_early = stop
        self._write_metrics(state.rows, state.layers, state.stopped_early)
        if self.progress:
            print(f"[{self.label}] iteration {k}/{cfg.schedule.iterations}: {row['compression']:.1f}x, val error "
                  f"{100 * (1 - row['val_acc']):.2f} %, test error {100 * row['test_error']:.2f} % "
                  f"({row['wall_time_s']:.0f} s){' (stopped: outside tolerance)' if stop else ''}", flush=True)
        if stop or k >= self._wanted_last(state.rows):
            state.done = True
            state.optimizer = state.scheduler = None
        else:
            state.iteration = k + 1
            state.start_stage("prune")
        self._save(state)

    def _bar(self, iterable: Any = None, **kwargs: Any) -> tqdm:
        if self.progress == "text":  # a terminal log or papermill's streamed output: a line at most every 30 s
            from tqdm import tqdm as plain

            return plain(iterable, file=sys.stderr, mininterval=30, ascii=True, **kwargs)
        kwargs["disable"] = bool(kwargs.get("disable", False)) or not self.progress
        return tqdm(iterable, **kwargs)


def run_experiment(config: ExperimentConfig, **kwargs: Any) -> Run:
    """Build a :class:`Run`, execute or resume it, and return it (metrics via ``run.metrics()``)."""
    run_kwargs = {k: kwargs.pop(k) for k in ("resume", "stop_after_epochs") if k in kwargs}
    run = Run(config, **kwargs)
    run.run(**run_kwargs)
    return run
