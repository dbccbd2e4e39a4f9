"""What a run reads: its data (registered, synthetic or your own) with their fingerprint, its model (registry or
factory) with its initial weights, the splits and the fixed scoring batch, and a baseline's reference run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..core.batches import input_shape_of
from ..data.datasets import DATASETS, Dataset, load_dataset, prepare, synthetic_dataset
from ..data.userdata import as_dataset, data_fingerprint
from ..graph.structure import PruningGraph, trace_model
from ..models.zoo import MODELS, create_model
from ..pruning.methods import Budget, get_method
from .config import ExperimentConfig
from .factories import ModelFactory, call_factory, resolve_factory, weights_fingerprint
from .results import read_results_csv

__all__ = ["RunInputs"]

_FINGERPRINTS: dict[tuple, str] = {}  # registered data: (name, sizes, files' signature) -> fingerprint, per process


def _files_signature(folder: Path) -> tuple:
    """Names, sizes and modification times of the files directly in ``folder`` (a changed file changes it)."""
    if not folder.is_dir():
        return ()
    return tuple(sorted((p.name, st.st_size, st.st_mtime_ns) for p in folder.iterdir() if p.is_file()
                        for st in [p.stat()]))


class RunInputs:
    """The part of :class:`~relief_nb.experiments.run.Run` that loads data, builds the model and checks inputs."""

    config: ExperimentConfig
    data_dir: Path
    device: torch.device
    generator: torch.Generator
    _user_data: Any
    _factory: ModelFactory | None
    _dataset: Dataset | None
    _model_fingerprint: str | None
    _user_data_fingerprint: str | None
    _device_copies: dict[str, torch.Tensor]  # the test split on the run's device

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

    def data_fingerprint(self) -> str:
        """:func:`~relief_nb.data.userdata.data_fingerprint` of the data this run reads. For a registered data set
        it is remembered per process (keyed by the files' sizes and times), so naming many runs loads the data
        once."""
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

    @property
    def test_x(self) -> torch.Tensor:
        return self._on_device("test_x")

    @property
    def test_y(self) -> torch.Tensor:
        return self._on_device("test_y")

    def _on_device(self, name: str) -> torch.Tensor:
        """The test split on the run's device, moved there once."""
        if name not in self._device_copies:
            self._device_copies[name] = getattr(self._data(), name).to(self.device)
        return self._device_copies[name]

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
            return call_factory(factory, ds.num_classes, ds.input_shape)

    def _model_weights(self) -> str | None:
        if self._factory is None and ":" not in self.config.model:
            return None  # registered models are named by the registry and built from the seed
        if self._model_fingerprint is None:
            # what the factory builds at seed 0 identifies it; the seed itself is the run's folder
            self._model_fingerprint = weights_fingerprint(self._build_model(self._data(), seed=0))
        return self._model_fingerprint

    def train_size(self) -> int:
        """The number of training examples this run reads (data loaded and checked: present, labels in range)."""
        return len(as_dataset(self._data()).train_y)

    def check_val_size(self, train_size: int) -> None:
        """The validation split must leave training data (checked before anything runs, also over a sweep's grid)."""
        if self.config.data.val_size >= train_size:
            raise ValueError(f"val_size={self.config.data.val_size} leaves no training data ({train_size} training "
                             f"images); for example val_size={max(1, train_size // 10)}")

    def _setup(self) -> None:
        cfg, ds = self.config, as_dataset(self._data())  # validates labels against the class count
        self.check_val_size(len(ds.train_y))
        if cfg.method.name != "relief":
            self._reference_layers()  # the reference run must exist before a baseline writes anything
        split = ds.split_validation(cfg.data.val_size, cfg.seed)
        # moved to the device once, as uint8: training and evaluation then cut their batches there
        self.train_x, self.train_y, self.val_x, self.val_y = (t.to(self.device) for t in split)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        idx = torch.randperm(len(self.train_y), generator=g)[: cfg.data.scoring_size]
        self.scoring_batch = prepare(self.train_x[idx], ds, self.device)  # fixed, no augmentation
        self.scoring_labels = self.train_y[idx].to(self.device)
        self.model = self._build_model(ds).to(self.device, memory_format=torch.channels_last)
        self.graph: PruningGraph = trace_model(self.model, input_shape_of(self.scoring_batch))
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)
        torch.manual_seed(cfg.seed + 3)  # the global RNG drives dropout; resume restores its state
        self.folder  # noqa: B018  (the name: fingerprints computed, a 0.1 folder migrated, before anything is written)

    # ------------------------------------------------------------------ a baseline's reference run
    def _reference_layers(self) -> pd.DataFrame:
        path = self._reference_folder() / "layers.csv"
        if not path.exists():
            method = self.config.method
            raise FileNotFoundError(f"the {method.name} baseline's reference run {method.reference} has no "
                                    f"layers.csv in {path.parent}; run NNrelief first")
        return read_results_csv(path, dtype={"layer": str})

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
