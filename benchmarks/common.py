"""Shared timing helpers for the benchmarks.

This machine's speed drifts by tens of percent over minutes, so quantities that are compared (a pass and a
forward, a masked and a dense epoch) are timed in interleaved rounds, and each keeps its best round.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torch

from relief_nb.experiments.config import ExperimentConfig
from relief_nb.experiments.presets import experiment_config
from relief_nb.experiments.run import Run
from relief_nb.models.zoo import create_model, input_shape_of
from relief_nb.pruning.relief import relief_prune
from relief_nb.reporting.tables import markdown

RUNS = Path(__file__).resolve().parent.parent / "results" / "runs"
DATA = Path(__file__).resolve().parent.parent / "data"
README_RUNS = {"lenet300-100": "lenet300-mnist", "lenet5": "lenet5-mnist"}  # the README's runs: profile cpu


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of ``fn()``; on a CUDA machine, queued kernels are waited for before and after."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def interleaved_best(fns: Mapping[str, Callable[[], object]], rounds: int = 3) -> dict[str, float]:
    """Best time of each function over ``rounds`` rounds that run all of them in turn (after a warm-up round)."""
    best = {name: float("inf") for name in fns}
    for round_ in range(rounds + 1):
        for name, fn in fns.items():
            t = seconds(fn)
            if round_:  # round 0 warms up
                best[name] = min(best[name], t)
    return best


def markdown_table(rows: list[dict]) -> str:
    return markdown(pd.DataFrame(rows))


def pruned_model(name: str, runs: Path = RUNS) -> tuple[torch.nn.Module, str]:
    """The final model of the README's real MNIST run of ``name`` (else of any real NNrelief run of it) when its
    folder exists; otherwise the model after three NNrelief passes on random inputs, untrained, labelled so."""
    readme = experiment_config(README_RUNS[name], "cpu") if name in README_RUNS else None
    found = []
    for config_path in sorted(runs.glob("*/seed_*/config.json")):
        cfg = ExperimentConfig.from_dict(json.loads(config_path.read_text()))
        usable = cfg.method.name == "relief" and not cfg.data.synthetic and (config_path.parent / "final.pt").exists()
        if cfg.model == name and usable:
            found.append((cfg.identity() != readme.identity() if readme else True, config_path, cfg))
    if found:
        _, config_path, cfg = min(found, key=lambda f: f[:2])
        model = Run.at(config_path.parent, data_dir=DATA).load_model()
        return model, f"real MNIST run {config_path.parent.parent.name}"
    model = create_model(name, seed=0)
    x = torch.rand(512, *input_shape_of(name))
    for _ in range(3):
        relief_prune(model, x)
    return model, "3 passes on random inputs, untrained (no real run found)"
