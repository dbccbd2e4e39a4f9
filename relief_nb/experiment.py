"""The iterative NNrelief experiment: pretrain, then score -> prune -> rewind / fine-tune -> retrain.

A run is identified by its hyperparameters (as in OpenLTH): it lives in one folder named after them, holding
``config.json``, ``metrics.csv`` / ``metrics.json`` (one row per iteration), ``layers.csv`` (one row per
layer and iteration), ``masks/iter_XX.pt`` (the model after each iteration, masks included) and
``checkpoint.pt``, written atomically after every epoch and every pruning step, so an interruption loses at
most the epoch in flight and :func:`run_experiment` resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from .baselines import METHODS, prune_to_counts
from .data import DATASETS, Dataset, load_dataset, prepare, synthetic_dataset
from .masks import load_pruned_state_dict
from .metrics import layer_table, summary
from .models import create_model, family_of
from .relief import ReliefConfig, relief_prune
from .structure import PruningGraph, trace_model
from .training import TrainConfig, evaluate, make_optimizer, train_epoch
from .validation import expect

__all__ = ["CheckpointError", "ExperimentConfig", "Run", "run_experiment"]


class CheckpointError(RuntimeError):
    """A checkpoint could not be read (truncated or corrupt); the file is left as it is."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Every hyperparameter of a run. Defaults are LeNet-300-100 on MNIST at the paper's settings (docs/method.md)."""

    model: str = "lenet300-100"
    dataset: str = "mnist"
    alpha_conv: float = 0.9
    alpha_fc: float = 0.95
    iterations: int = 20
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(60, "adam", 1e-3, milestones=(30,)))
    retrain: TrainConfig = field(default_factory=lambda: TrainConfig(60, "adam", 1e-3, milestones=(30,)))
    rewind: bool | None = None  # None: LeNets are rewound to their initial weights, VGG/ResNet fine-tuned
    scoring_size: int = 1000
    val_size: int = 5000
    conv_aggregation: str = "sample_l2"
    selection: str = "paper"
    tolerance: float | None = None  # stop once val accuracy < baseline - tolerance (fraction, e.g. 0.005)
    target_compression: float | None = None  # stop at the first iteration whose compression reaches this
    seed: int = 0
    synthetic: bool = False  # a stand-in data set of the right shape (smoke runs; numbers are not results)
    n_train: int | None = None  # subsets for quick runs (None: everything)
    n_test: int | None = None
    method: str = "relief"  # or a baseline of relief_nb.baselines, pruned to the sparsity of `reference`
    reference: str | None = None  # NNrelief run (its folder name, beside this run's) a baseline starts from and
    # whose per-iteration sparsity it matches; a name, not a path, so the same baseline is one run from anywhere

    def __post_init__(self) -> None:
        self.relief_config()  # validates alphas and options early
        for name, minimum, example in (("iterations", 0, "20"), ("scoring_size", 1, "1000"), ("val_size", 1, "5000")):
            expect(name, getattr(self, name), (int,), lambda v, m=minimum: v >= m, f"an integer >= {minimum}", example)
        expect("seed", self.seed, (int,), example="0")
        for name in ("n_train", "n_test"):
            expect(name, getattr(self, name), (int, type(None)), lambda v: v >= 1, "None or an integer >= 1", "1000")
        expect("tolerance", self.tolerance, (int, float, type(None)), lambda v: v >= 0,
               "None or a fraction of accuracy >= 0", "0.005")
        expect("target_compression", self.target_compression, (int, float, type(None)), lambda v: v > 1,
               "None or a number > 1", "50")
        expect("synthetic", self.synthetic, (bool,))
        expect("rewind", self.rewind, (bool, type(None)), example="True")
        for stage in ("pretrain", "retrain"):
            if not isinstance(getattr(self, stage), TrainConfig):
                raise ValueError(f"{stage} must be a TrainConfig, got {getattr(self, stage)!r}")
        family_of(self.model)  # unknown names raise, listing the known ones
        if self.dataset not in DATASETS:
            raise KeyError(f"unknown data set {self.dataset!r}; known data sets: {', '.join(sorted(DATASETS))}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.method != "relief" and self.reference is None:
            raise ValueError(f"the {self.method} baseline needs reference=<folder of an NNrelief run>")

    def relief_config(self) -> ReliefConfig:
        return ReliefConfig(self.alpha_conv, self.alpha_fc, self.conv_aggregation, self.selection)  # type: ignore[arg-type]

    @property
    def rewinds(self) -> bool:
        return family_of(self.model) == "lenet" if self.rewind is None else bool(self.rewind)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pretrain"], d["retrain"] = self.pretrain.to_dict(), self.retrain.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown experiment settings {sorted(unknown)}; known: {sorted(known)}")
        for key in ("pretrain", "retrain"):
            if isinstance(d.get(key), dict):
                d[key] = TrainConfig(**d[key])
        return cls(**d)

    def run_name(self) -> str:
        """Readable and unique: the main hyperparameters plus a hash of all of them."""
        digest = hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
        data = f"{self.dataset}{'-synthetic' if self.synthetic else ''}"
        method = "" if self.method == "relief" else f"_{self.method}"
        return (f"{self.model}_{data}{method}_ac{self.alpha_conv:g}_af{self.alpha_fc:g}_it{self.iterations}"
                f"_s{self.seed}_{digest}")


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


class Run:
    """One experiment in its folder. :meth:`run` executes (or resumes) it; results are then in the folder."""

    def __init__(self, config: ExperimentConfig, results_dir: str | os.PathLike = "results",
                 data_dir: str | os.PathLike = "data", device: str | torch.device | None = "auto",
                 progress: bool | str = True, dataset: Dataset | None = None, label: str | None = None) -> None:
        self.config = config
        self.folder = Path(results_dir) / config.run_name()
        self.data_dir = Path(data_dir)
        self.device = _resolve_device(device)
        self.progress = progress  # True: progress bars; "text": plain lines every 30 s (logs, papermill); False
        self.label = label or config.run_name()
        self._dataset = dataset

    # ------------------------------------------------------------------ setup
    def _data(self) -> Dataset:
        cfg = self.config
        if self._dataset is None:
            ds = synthetic_dataset(cfg.dataset, seed=cfg.seed) if cfg.synthetic else load_dataset(cfg.dataset,
                                                                                                   self.data_dir)
            self._dataset = ds.subset(cfg.n_train, cfg.n_test) if (cfg.n_train or cfg.n_test) else ds
        return self._dataset

    def _setup(self) -> None:
        cfg, ds = self.config, self._data()
        for split, labels in (("training", ds.train_y), ("test", ds.test_y)):
            if len(labels) and not (int(labels.min()) >= 0 and int(labels.max()) < ds.num_classes):
                raise ValueError(f"{ds.name}: {split} labels must lie in [0, {ds.num_classes}), found "
                                 f"{int(labels.min())}..{int(labels.max())}; check the label files")
        if cfg.val_size >= len(ds.train_y):
            raise ValueError(f"val_size={cfg.val_size} leaves no training data ({len(ds.train_y)} training images); "
                             f"for example val_size={max(1, len(ds.train_y) // 10)}")
        self.train_x, self.train_y, self.val_x, self.val_y = ds.split_validation(cfg.val_size, cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        idx = torch.randperm(len(self.train_y), generator=g)[: cfg.scoring_size]
        self.scoring_batch = prepare(self.train_x[idx], ds, self.device)  # fixed, no augmentation
        model = create_model(cfg.model, ds.num_classes, seed=cfg.seed)
        self.model = model.to(self.device, memory_format=torch.channels_last)  # matches prepare()'s batches
        self.graph: PruningGraph = trace_model(self.model, ds.input_shape)
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)
        torch.manual_seed(cfg.seed + 3)  # the global RNG drives dropout; resume restores its state

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    def _save(self, state: dict[str, Any]) -> None:
        state["model"] = self.model.state_dict()
        state["rng"] = torch.get_rng_state()
        state["generator"] = self.generator.get_state()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        _atomic_save(state, self.checkpoint_path)

    def _restore(self, state: dict[str, Any]) -> None:
        load_pruned_state_dict(self.model, state["model"])
        torch.set_rng_state(state["rng"])
        self.generator.set_state(state["generator"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

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
    def _train_stage(self, state: dict[str, Any], cfg: TrainConfig, label: str) -> None:
        """Run the remaining epochs of the current stage, checkpointing after each; keep the best-val model."""
        ds = self._data()
        opt, sched = make_optimizer(self.model, cfg)
        if state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        bar = self._bar(range(state["epoch"], cfg.epochs), desc=f"{self.label}: {label}", leave=False,
                        initial=state["epoch"], total=cfg.epochs)
        for epoch in bar:
            start = time.perf_counter()
            loss = train_epoch(self.model, self.train_x, self.train_y, ds, cfg, opt, self.device, self.generator)
            sched.step()
            val = evaluate(self.model, self.val_x, self.val_y, ds, self.device)
            if state["best_val"] is None or val > state["best_val"]:
                state["best_val"] = val
                state["best_model"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.4f}")
            state["epoch"] = epoch + 1
            state["optimizer"], state["scheduler"] = opt.state_dict(), sched.state_dict()
            state["elapsed"] += time.perf_counter() - start
            self._save(state)
            if self._stop_after_epochs is not None:
                self._stop_after_epochs -= 1
                if self._stop_after_epochs <= 0:
                    raise KeyboardInterrupt("stopped on request (stop_after_epochs)")
        if state["best_model"] is not None:
            load_pruned_state_dict(self.model, state["best_model"])

    def _start_stage(self, state: dict[str, Any], phase: str) -> None:
        state.update(phase=phase, epoch=0, optimizer=None, scheduler=None, best_val=None, best_model=None)

    # ------------------------------------------------------------------ the schedule
    def run(self, resume: bool = True, stop_after_epochs: int | None = None) -> pd.DataFrame:
        """Execute the experiment (resuming from ``checkpoint.pt`` if present) and return its metrics.

        ``stop_after_epochs`` interrupts the run after that many epochs (for tests of resumption).
        """
        self._stop_after_epochs = stop_after_epochs
        self._setup()  # data, labels, sizes: every check that can fail runs before anything is written
        self.folder.mkdir(parents=True, exist_ok=True)
        with run_lock(self.folder):
            return self._run_locked(resume)

    def _run_locked(self, resume: bool) -> pd.DataFrame:
        cfg = self.config
        (self.folder / "masks").mkdir(exist_ok=True)
        config_path = self.folder / "config.json"
        if not config_path.exists():
            config_path.write_text(json.dumps(self.config.to_dict(), indent=2))
        if resume and self.checkpoint_path.exists():
            state = load_checkpoint(self.checkpoint_path)
            self._restore(state)
        else:
            state = {"phase": "pretrain", "iteration": 0, "epoch": 0, "optimizer": None, "scheduler": None,
                     "best_val": None, "best_model": None, "rows": [], "layers": [], "elapsed": 0.0,
                     "before": None, "done": False,
                     "init": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
            self._save(state)
        bar = self._bar(total=cfg.iterations + 1, desc=f"{self.label}: iterations", initial=len(state["rows"]),
                        disable=bool(state["done"]))  # a finished run is read back without a bar
        try:
            while not state["done"]:
                self._step(state)
                bar.n = len(state["rows"])
                bar.refresh()
        finally:
            bar.close()
        return self.metrics()

    def _bar(self, iterable: Any = None, **kwargs: Any) -> tqdm:
        if self.progress == "text":  # a terminal log or papermill's streamed output: a line at most every 30 s
            from tqdm import tqdm as plain

            return plain(iterable, file=sys.stderr, mininterval=30, ascii=True, **kwargs)
        kwargs["disable"] = bool(kwargs.get("disable", False)) or not self.progress
        return tqdm(iterable, **kwargs)

    def _reference_folder(self) -> Path:
        ref = Path(self.config.reference or "")
        return ref if len(ref.parts) > 1 or ref.is_absolute() else self.folder.parent / ref

    def _step(self, state: dict[str, Any]) -> None:
        cfg = self.config
        if state["phase"] == "pretrain":
            if cfg.reference is not None:  # a baseline starts from the reference run's pretrained model
                load_pruned_state_dict(self.model, torch.load(self._reference_folder() / "masks" / "iter_00.pt",
                                                              map_location=self.device))
            else:
                self._train_stage(state, cfg.pretrain, "pretrain")
            self._finish_iteration(state)
        elif state["phase"] == "prune":
            start = time.perf_counter()
            if cfg.method == "relief":
                relief_prune(self.model, self.scoring_batch, cfg.relief_config(), self.graph)
            else:
                self._prune_baseline(state["iteration"])
            state["before"] = self._measure()
            if cfg.rewinds:
                self._rewind(state["init"])
            self._start_stage(state, "retrain")
            state["elapsed"] += time.perf_counter() - start
            self._save(state)
        elif state["phase"] == "retrain":
            self._train_stage(state, cfg.retrain, f"iteration {state['iteration']}")
            self._finish_iteration(state)

    def _reference_layers(self) -> pd.DataFrame:
        path = self._reference_folder() / "layers.csv"
        if not path.exists():
            raise FileNotFoundError(f"reference run {self.config.reference} has no layers.csv; run NNrelief first")
        return pd.read_csv(path, dtype={"layer": str})

    def _prune_baseline(self, iteration: int) -> None:
        """Prune to the weights NNrelief kept at this iteration (per layer, or in total for the global one)."""
        ref = self._reference_layers()
        ref = ref[ref.iteration == iteration]
        keep = {row.layer: int(row.weights_remaining) for row in ref.itertuples()}
        target = sum(keep.values()) if self.config.method == "magnitude_global" else keep
        prune_to_counts(self.graph, self.config.method, target, self.generator)

    def _last_iteration(self) -> int:
        if self.config.reference is None:
            return self.config.iterations
        return min(self.config.iterations, int(self._reference_layers().iteration.max()))

    def _rewind(self, init: dict[str, torch.Tensor]) -> None:
        """Reset weights to their saved initial values, keeping the masks (LeNets, as in the paper)."""
        current = self.model.state_dict()  # tensors share storage with the model
        with torch.no_grad():
            for key, value in init.items():
                target = key if key in current else f"{key}_orig"
                if target in current and not key.endswith("_mask"):
                    current[target].copy_(value)

    def _finish_iteration(self, state: dict[str, Any]) -> None:
        cfg = self.config
        k = state["iteration"]
        row, layers = self._record(k, state["before"], state["elapsed"])
        state["elapsed"] = 0.0
        stop = False
        if cfg.tolerance is not None and state["rows"]:
            baseline = state["rows"][0]["val_acc"]
            if row["val_acc"] < baseline - cfg.tolerance:
                stop = True  # keep the last model within tolerance: masks/iter_{k-1}.pt, final.pt
        if not stop:
            state["rows"].append(row)
            state["layers"] += layers
            _atomic_save(self.model.state_dict(), self.folder / "masks" / f"iter_{k:02d}.pt")
            _atomic_save(self.model.state_dict(), self.folder / "final.pt")
        reached = cfg.target_compression is not None and row["compression"] >= cfg.target_compression
        state["stopped_early"] = stop
        self._write_metrics(state)
        if self.progress:
            print(f"[{self.label}] iteration {k}/{cfg.iterations}: {row['compression']:.1f}x, val error "
                  f"{100 * (1 - row['val_acc']):.2f} %, test error {100 * row['test_error']:.2f} % "
                  f"({row['wall_time_s']:.0f} s){' (stopped: outside tolerance)' if stop else ''}", flush=True)
        if stop or reached or k >= self._last_iteration():
            state["done"] = True
            state["best_model"] = state["optimizer"] = state["scheduler"] = None
        else:
            state["iteration"] = k + 1
            self._start_stage(state, "prune")
        self._save(state)

    def _write_metrics(self, state: dict[str, Any]) -> None:
        rows = pd.DataFrame(state["rows"])
        rows.to_csv(self.folder / "metrics.csv", index=False)
        tmp = self.folder / ".metrics.json.tmp"
        tmp.write_text(rows.to_json(orient="records", indent=1))
        os.replace(tmp, self.folder / "metrics.json")
        pd.DataFrame(state["layers"]).to_csv(self.folder / "layers.csv", index=False)
        info = {"synthetic": self.config.synthetic, "stopped_early": state.get("stopped_early", False),
                "device": str(self.device)}
        (self.folder / "run.json").write_text(json.dumps(info, indent=2))

    # ------------------------------------------------------------------ results
    def metrics(self) -> pd.DataFrame:
        path = self.folder / "metrics.csv"
        return pd.read_csv(path) if path.exists() else pd.DataFrame()

    def layers(self) -> pd.DataFrame:
        path = self.folder / "layers.csv"
        return pd.read_csv(path, dtype={"layer": str}) if path.exists() else pd.DataFrame()

    def load_model(self, iteration: int | None = None) -> torch.nn.Module:
        """The pruned model after ``iteration`` (default: the final one), masks installed."""
        path = self.folder / ("final.pt" if iteration is None else f"masks/iter_{iteration:02d}.pt")
        model = create_model(self.config.model, self._data().num_classes)
        load_pruned_state_dict(model, torch.load(path, map_location="cpu"))
        return model


def run_experiment(config: ExperimentConfig, **kwargs: Any) -> Run:
    """Build a :class:`Run`, execute or resume it, and return it (metrics via ``run.metrics()``)."""
    run_kwargs = {k: kwargs.pop(k) for k in ("resume", "stop_after_epochs") if k in kwargs}
    run = Run(config, **kwargs)
    run.run(**run_kwargs)
    return run


def override(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """A copy of ``config`` with ``changes``; ``pretrain_epochs`` / ``retrain_epochs`` reach the stages."""
    known = {f.name for f in fields(ExperimentConfig)}
    stage_keys = {f"{s}_{f.name}" for s in ("pretrain", "retrain") for f in fields(TrainConfig)}
    unknown = set(changes) - known - stage_keys
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(known | stage_keys)}")
    for stage in ("pretrain", "retrain"):
        for key in list(changes):
            if key.startswith(f"{stage}_"):
                sub = key[len(stage) + 1:]
                changes[stage] = replace(changes.get(stage, getattr(config, stage)), **{sub: changes.pop(key)})
    return replace(config, **changes)
