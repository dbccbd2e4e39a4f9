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
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..common.paths import inside
from ..core.masks import load_pruned_state_dict
from ..data.datasets import DATASETS, Dataset, load_dataset, prepare, synthetic_dataset
from ..data.userdata import as_dataset, data_fingerprint, hash_tensor
from ..graph.compact import CompactModel
from ..graph.structure import PruningGraph, trace_model
from ..models.zoo import MODELS, create_model
from ..pruning.methods import Budget, ReliefMethod, get_method
from ..pruning.metrics import layer_table, summary
from .config import ExperimentConfig, override
from .training import TrainConfig, evaluate, make_optimizer, train_epoch

__all__ = ["CheckpointError", "ExperimentConfig", "Run", "RunState", "migrate_runs", "override", "run_experiment"]

class CheckpointError(RuntimeError):
    """A checkpoint could not be read (truncated or corrupt); the file is left as it is."""


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'; a device this machine lacks is refused."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but this machine has no CUDA device; use device='cpu' "
                         "or 'auto'")
    return resolved


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


ModelFactory = Callable[..., torch.nn.Module]


def resolve_factory(spec: str) -> ModelFactory:
    """``"package.module:function"`` -> the function (imported), with errors that say what to fix."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"a model factory is written 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} for model {spec!r} ({err}); is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no callable {attr!r} (model {spec!r})")
    return factory


def _call_factory(factory: ModelFactory, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """Call a model factory with the keywords it declares among ``num_classes``, ``input_shape`` and
    ``in_channels`` (so ``make_net()``, ``make_net(num_classes)`` and ``make_net(**everything)`` all work)."""
    offered = {"num_classes": num_classes, "input_shape": input_shape, "in_channels": input_shape[0]}
    params = inspect.signature(factory).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    model = factory(**{k: v for k, v in offered.items() if takes_all or k in params})
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"the model factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _weights_fingerprint(model: torch.nn.Module) -> str:
    """sha1 of a model's architecture and initial state (a factory of your own is identified by what it builds)."""
    h = hashlib.sha1(repr(model).encode())
    for key, value in model.state_dict().items():
        hash_tensor(h, value, key)
    return h.hexdigest()[:16]


_FINGERPRINTS: dict[tuple, str] = {}


def _repaired_milestones(milestones: Any) -> Any:
    """MultiStepLR milestones as older checkpoints stored them: ``Counter({30: 1})`` saved through
    ``dataclasses.asdict`` became ``Counter({(30, 1): 1})``, once more per resumption; undo every layer."""
    while isinstance(milestones, Counter) and milestones and all(
            isinstance(k, tuple) and len(k) == 2 for k in milestones):
        milestones = Counter(dict(milestones.keys()))
    return milestones


def _json_row(row: dict[str, Any]) -> str:
    return json.dumps({k: v.item() if hasattr(v, "item") else v for k, v in row.items()}, indent=1)


def _files_signature(folder: Path) -> tuple:
    """Names, sizes and modification times of the files directly in ``folder`` (a changed file changes it)."""
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in folder.iterdir() if p.is_file()
                        for st in [p.stat()]))


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


class Run:
    """One experiment in its folder. :meth:`run` executes (or resumes) it; results are then in the folder.

    ``data``: your own data (anything :func:`relief_nb.userdata.as_dataset` takes: tensors, torch Datasets, a
    folder), with ``config.data.name`` as its label; default: the registered data set ``config.data.name`` from
    ``data_dir``. ``model``: a factory of your own (called with the keywords it declares among ``num_classes``,
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
        self.device = _resolve_device(device)
        self.progress = progress  # True: progress bars; "text": plain lines every 30 s (logs, papermill); False
        self._label = label
        self._user_data = data if data is not None else dataset  # ``dataset=``: the 0.1 keyword
        if model is not None and not callable(model):
            raise TypeError(f"model must be a factory (a callable returning an nn.Module), got {type(model).__name__}")
        self._factory = model
        self.meta = dict(meta or {})
        self._dataset: Dataset | None = None
        self._folder: Path | None = None
        self._model_fingerprint: str | None = None
        self._user_data_fingerprint: str | None = None

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

    def data_fingerprint(self) -> str:
        """:func:`~relief_nb.userdata.data_fingerprint` of the data this run reads. For a registered data set it is
        remembered per process (keyed by the files' sizes and times), so naming many runs loads the data once."""
        if self._user_data is not None or self.config.data.name not in DATASETS:
            if self._user_data_fingerprint is None:  # hashed once per run, not at every iteration's record
                self._user_data_fingerprint = data_fingerprint(self._data())
            return self._user_data_fingerprint
        data = self.config.data
        if data.synthetic:  # the stand-in is a function of the seed, which the seed folder already names
            return f"synthetic-{data.name}-{data.n_train}-{data.n_test}"
        key = (data.name, data.n_train, data.n_test, _files_signature(self.data_dir / DATASETS[data.name].folder))
        if key not in _FINGERPRINTS:
            _FINGERPRINTS[key] = data_fingerprint(self._data())
        return _FINGERPRINTS[key]

    def finished(self) -> bool:
        """Whether the folder holds every iteration this config asks for (memory-mapped read of the checkpoint,
        so cheap; a missing or unreadable one counts as not finished and the run itself then reports it)."""
        try:
            saved = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False, mmap=True)
        except Exception:
            return False
        if not isinstance(saved, dict) or not saved.get("done"):
            return False
        state = RunState.from_checkpoint(saved)
        return state.stopped_early or (bool(state.rows) and state.rows[-1]["iteration"] >= self._wanted_last(
            state.rows))

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
                (target / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
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
                    (folder / "metrics.json").write_text(_json_row(row))
        if not any(old.iterdir()):
            old.rmdir()

    def iteration_folder(self, k: int) -> Path:
        """``iterations/XX/``: the model after iteration ``k`` (``model.pt``, masks included) and its metrics row."""
        return self.folder / "iterations" / f"{k:02d}"

    # ------------------------------------------------------------------ setup
    def _data(self) -> Dataset:
        cfg = self.config
        if self._dataset is None:
            if self._user_data is not None:
                ds = as_dataset(self._user_data, cfg.data.name)
            elif cfg.data.name not in DATASETS:
                raise KeyError(f"unknown data set {cfg.data.name!r}; known data sets: {', '.join(sorted(DATASETS))}, "
                               "or pass your own: Run(config, data=(train_x, train_y, test_x, test_y)) or a folder")
            elif cfg.data.synthetic:
                ds = synthetic_dataset(cfg.data.name, seed=cfg.seed)
            else:
                ds = load_dataset(cfg.data.name, self.data_dir)
            subset = cfg.data.n_train or cfg.data.n_test
            self._dataset = ds.subset(cfg.data.n_train, cfg.data.n_test) if subset else ds
        return self._dataset

    def _build_model(self, ds: Dataset, seed: int | None = None) -> torch.nn.Module:
        """The model with its initial weights: seeded by ``seed`` (default ``config.seed``) whatever builds it."""
        cfg = replace(self.config, seed=self.config.seed if seed is None else seed)
        factory = self._factory or (resolve_factory(cfg.model) if ":" in cfg.model else None)
        if factory is None:
            if cfg.model not in MODELS:
                raise KeyError(f"unknown model {cfg.model!r}; known models: {', '.join(sorted(MODELS))}, or a "
                               "factory 'package.module:function', or Run(config, model=make_net)")
            return create_model(cfg.model, ds.num_classes, seed=cfg.seed, input_shape=ds.input_shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return _call_factory(factory, ds.num_classes, ds.input_shape)

    def _model_weights(self) -> str | None:
        if self._factory is None and ":" not in self.config.model:
            return None  # registered models are named by the registry and built from the seed
        if self._model_fingerprint is None:
            # what the factory builds at seed 0 identifies it; the seed itself is the run's folder
            self._model_fingerprint = _weights_fingerprint(self._build_model(self._data(), seed=0))
        return self._model_fingerprint

    def _setup(self) -> None:
        cfg, ds = self.config, as_dataset(self._data())  # validates labels against the class count
        if cfg.data.val_size >= len(ds.train_y):
            raise ValueError(f"val_size={cfg.data.val_size} leaves no training data ({len(ds.train_y)} training "
                             f"images); for example val_size={max(1, len(ds.train_y) // 10)}")
        if cfg.method.name != "relief":
            self._reference_layers()  # the reference run must exist before a baseline writes anything
        self.train_x, self.train_y, self.val_x, self.val_y = ds.split_validation(cfg.data.val_size, cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        idx = torch.randperm(len(self.train_y), generator=g)[: cfg.data.scoring_size]
        self.scoring_batch = prepare(self.train_x[idx], ds, self.device)  # fixed, no augmentation
        self.scoring_labels = self.train_y[idx].to(self.device)
        self.model = self._build_model(ds).to(self.device, memory_format=torch.channels_last)
        self.graph: PruningGraph = trace_model(self.model, ds.input_shape)
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)
        torch.manual_seed(cfg.seed + 3)  # the global RNG drives dropout; resume restores its state
        self.folder  # noqa: B018  (the name: fingerprints computed, a 0.1 folder migrated, before anything is written)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    def _save(self, state: RunState) -> None:
        # not dataclasses.asdict: it rebuilds a dict subclass from its items, which turns MultiStepLR's milestones
        # Counter({30: 1}) into Counter({(30, 1): 1}), and a resumed run then never decays its learning rate
        saved: dict[str, Any] = {f.name: getattr(state, f.name) for f in fields(state)}
        saved["model"] = self.model.state_dict()
        saved["rng"] = torch.get_rng_state()
        saved["generator"] = self.generator.get_state()
        if self.device.type == "cuda":
            saved["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        _atomic_save(saved, self.checkpoint_path)

    def _restore(self, saved: dict[str, Any]) -> RunState:
        load_pruned_state_dict(self.model, saved["model"])
        torch.set_rng_state(saved["rng"])
        self.generator.set_state(saved["generator"])
        if "cuda_rng" in saved and self.device.type == "cuda":
            torch.cuda.set_rng_state(saved["cuda_rng"], self.device)
        # relief_nb 0.1 kept the initial and the best model inside every checkpoint
        if saved.get("init") is not None and not (self.folder / "init.pt").exists():
            _atomic_save(saved["init"], self.folder / "init.pt")
        if saved.get("best_model") is not None:
            _atomic_save(saved["best_model"], self.folder / "best.pt")
        state = RunState.from_checkpoint(saved)
        if state.scheduler is not None:
            state.scheduler["milestones"] = _repaired_milestones(state.scheduler.get("milestones"))
        return state

    # ------------------------------------------------------------------ measurement
    def _measure(self) -> dict[str, Any]:
        ds = self._data()
        return {
            "val_acc": evaluate(self.model, self.val_x, self.val_y, ds, self.device),
            "test_acc": evaluate(self.model, self.test_x, self.test_y, ds, self.device),
        }

    @property
    def test_x(self) -> torch.Tensor:
        return self._data().test_x

    @property
    def test_y(self) -> torch.Tensor:
        return self._data().test_y

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

    # ------------------------------------------------------------------ training stage
    def _train_stage(self, state: RunState, cfg: TrainConfig, label: str) -> None:
        """Run the remaining epochs of the current stage, checkpointing after each; keep the best-val model.

        After a pruning step the stage trains a compact copy (removed units sliced away, :mod:`relief_nb.compact`)
        unless ``schedule.compact`` is off; the full model gets its weights after every epoch, and the checkpoint
        holds the optimizer state in the full model's layout either way."""
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
            loss = train_epoch(trainee, self.train_x, self.train_y, ds, cfg, opt, self.device, self.generator)
            sched.step()
            val = evaluate(trainee, self.val_x, self.val_y, ds, self.device)
            if compact is not None:
                compact.write_back()
            if state.best_val is None or val > state.best_val:
                state.best_val = val
                _atomic_save(self.model.state_dict(), best_path)  # before the checkpoint that points to it
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

    def _compact(self) -> CompactModel | None:
        """The compact copy to retrain, or None (turned off, nothing removed, or a model it cannot slice)."""
        if not self.config.schedule.compact:
            return None
        try:
            compact = CompactModel(self.model, self.graph)
            compact.check(self._data().input_shape, self.scoring_batch[:8])
        except Exception as err:  # an optimisation only: any failure retrains the masked model, as before
            warnings.warn(f"compact retraining is off for this stage ({type(err).__name__}: {err}); the masked model "
                          "is retrained instead", stacklevel=2)
            return None
        return compact if compact.parameter_fraction() < 1 else None

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
            config_path.write_text(json.dumps(self.config.to_dict(), indent=2))
        if resume and self.checkpoint_path.exists():
            state = self._restore(load_checkpoint(self.checkpoint_path))
            self._extend(state)
        else:
            state = RunState()
            _atomic_save(self.model.state_dict(), self.folder / "init.pt")  # the initial weights, once
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

    def _bar(self, iterable: Any = None, **kwargs: Any) -> tqdm:
        if self.progress == "text":  # a terminal log or papermill's streamed output: a line at most every 30 s
            from tqdm import tqdm as plain

            return plain(iterable, file=sys.stderr, mininterval=30, ascii=True, **kwargs)
        kwargs["disable"] = bool(kwargs.get("disable", False)) or not self.progress
        return tqdm(iterable, **kwargs)

    def _reference_folder(self) -> Path:
        """The NNrelief run a baseline follows: ``<runs>/<reference>/seed_<seed>`` for an experiment's name,
        ``<runs>/<reference>`` for ``<experiment>/seed_<k>`` (checked by :class:`~relief_nb.config.MethodConfig`)."""
        ref = Path(self.config.method.reference or "")
        runs = self.folder.parent.parent
        folder = runs / ref if len(ref.parts) > 1 else runs / ref / f"seed_{self.config.seed}"
        return inside(runs, folder, "the reference run")

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

    def _reference_layers(self) -> pd.DataFrame:
        path = self._reference_folder() / "layers.csv"
        if not path.exists():
            method = self.config.method
            raise FileNotFoundError(f"the {method.name} baseline's reference run {method.reference} has no "
                                    f"layers.csv in {path.parent}; run NNrelief first")
        return pd.read_csv(path, dtype={"layer": str})

    def _prune_baseline(self, iteration: int) -> None:
        """Prune to the weights NNrelief kept at this iteration (per layer; the global method takes the total),
        scored on the same scoring batch (and its labels, for SNIP)."""
        ref = self._reference_layers()
        ref = ref[ref.iteration == iteration]
        budget = Budget(per_layer={row.layer: int(row.weights_remaining) for row in ref.itertuples()})
        get_method(self.config.method.name).prune(self.graph, self.scoring_batch, self.scoring_labels, budget,
                                             self.generator)

    def _last_iteration(self) -> int:
        """The iterations asked for; a baseline stops with its reference too (if the reference is gone, a
        finished baseline is read back as it is)."""
        if self.config.method.reference is None:
            return self.config.schedule.iterations
        path = self._reference_folder() / "layers.csv"
        if not path.exists():
            return self.config.schedule.iterations
        return min(self.config.schedule.iterations, int(self._reference_layers().iteration.max()))

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
            self.iteration_folder(k).mkdir(parents=True, exist_ok=True)
            _atomic_save(self.model.state_dict(), self.iteration_folder(k) / "model.pt")
            (self.iteration_folder(k) / "metrics.json").write_text(_json_row(row))
            _atomic_save(self.model.state_dict(), self.folder / "final.pt")
        state.stopped_early = stop
        self._write_metrics(state)
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

    def _write_metrics(self, state: RunState) -> None:
        rows = pd.DataFrame(state.rows)
        rows.to_csv(self.folder / "metrics.csv", index=False)
        tmp = self.folder / ".metrics.json.tmp"
        tmp.write_text(rows.to_json(orient="records", indent=1))
        os.replace(tmp, self.folder / "metrics.json")
        pd.DataFrame(state.layers).to_csv(self.folder / "layers.csv", index=False)
        self._write_provenance(stopped_early=state.stopped_early)

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
        tmp = self.folder / ".run.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, path)

    # ------------------------------------------------------------------ results
    def metrics(self) -> pd.DataFrame:
        """One row per iteration, up to the last one this config's stopping rules ask for (a longer run of the
        same settings may have made more)."""
        path = self.folder / "metrics.csv"
        if not path.exists():
            return pd.DataFrame()
        df = pd.read_csv(path)
        return df[df.iteration <= self._wanted_last(df.to_dict("records"))].reset_index(drop=True)

    def layers(self) -> pd.DataFrame:
        path = self.folder / "layers.csv"
        if not path.exists():
            return pd.DataFrame()
        df = pd.read_csv(path, dtype={"layer": str})
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


def run_experiment(config: ExperimentConfig, **kwargs: Any) -> Run:
    """Build a :class:`Run`, execute or resume it, and return it (metrics via ``run.metrics()``)."""
    run_kwargs = {k: kwargs.pop(k) for k in ("resume", "stop_after_epochs") if k in kwargs}
    run = Run(config, **kwargs)
    run.run(**run_kwargs)
    return run


def migrate_runs(runs_dir: str | os.PathLike, data_dir: str | os.PathLike = "data") -> list[tuple[str, str]]:
    """Move every run folder of an older layout directly under ``runs_dir`` (relief_nb 0.1's names, 0.2
    development's flat names) to ``<experiment>/seed_<k>/``, NNrelief runs first so that baselines follow their
    references' new names; returns (old, new) names. Registered data are loaded to fingerprint them; a folder
    whose data or model cannot be found here is left as it is, with a message."""
    runs_dir = Path(runs_dir)
    found = []
    for config_path in sorted(runs_dir.glob("*/config.json")):
        try:
            found.append((config_path.parent, ExperimentConfig.from_dict(json.loads(config_path.read_text()))))
        except (ValueError, KeyError, TypeError) as err:
            print(f"left {config_path.parent.name} as it is (its config.json: {err})", file=sys.stderr)
    renamed: dict[str, str] = {}  # an NNrelief run's old folder names -> its experiment's new name
    moved = []
    for old, config in sorted(found, key=lambda item: item[1].is_baseline):
        if config.is_baseline and config.method.reference in renamed:
            config = override(config, reference=renamed[config.method.reference])
        try:
            run = Run(config, runs_dir, data_dir, device="cpu", progress=False)
            name = run.run_name()
        except Exception as err:  # custom data or models, absent data: nothing can name the folder here
            print(f"left {old.name} as it is ({type(err).__name__}: {err})", file=sys.stderr)
            continue
        if not config.is_baseline:
            renamed[old.name] = renamed[config.legacy_run_name()] = name.split("/")[0]
        target = runs_dir / name
        if target.exists():
            print(f"left {old.name} as it is ({name} exists)", file=sys.stderr)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old, target)
        (target / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        run._folder = target
        run._migrate_iterations()
        moved.append((old.name, name))
    return moved
