"""A sweep's grid: experiments (preset names) x ``alpha_conv`` x ``alpha_fc`` x seeds x methods, times any other
setting given as a list in ``params``, expanded into one :class:`SweepRun` per run folder; and grids read from
TOML files (``sweeps/*.toml``)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..common import paths
from ..experiments.config import ExperimentConfig, override
from ..experiments.run import Run

__all__ = ["GRID_KEYS", "SweepRun", "expand_grid", "grid_errors", "load_grid"]

# keys of a grid, in a TOML file and as run_sweep's arguments (the CLI's options spell them with dashes)
GRID_KEYS = ("experiment", "alpha_conv", "alpha_fc", "seeds", "methods", "profile", "params", "name", "device",
             "retries", "runs_per_gpu")


@dataclass(frozen=True)
class SweepRun:
    """One point of a grid: its coordinates (what the table shows), its config (``None`` if it could not be
    built; ``error`` says why) and, for a baseline, the run name of its NNrelief reference."""

    coords: dict[str, Any]
    config: ExperimentConfig | None
    error: str | None = None
    reference: str | None = field(default=None)
    name: str = ""  # the run folder's name (it hashes the data read); "invalid:<hash>" for a point with no config

    def __post_init__(self) -> None:
        if not self.name:
            digest = hashlib.sha1(json.dumps(self.coords, sort_keys=True, default=str).encode()).hexdigest()[:8]
            object.__setattr__(self, "name", f"invalid:{digest}")


def _as_list(value: Any) -> list[Any]:
    """A list (or other non-string iterable but a tuple) is an axis; anything else is one value."""
    if value is None:
        return [None]
    if isinstance(value, (str, tuple)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def _param_axis(key: str, value: Any) -> list[Any]:
    """``params`` values: a list is an axis, except that ``*_milestones`` take a list of ints as one value
    (a list of lists is then the axis); the string ``"None"`` (TOML has no null) stands for None."""
    if key.endswith("milestones") and isinstance(value, list) and all(isinstance(v, int) for v in value):
        value = tuple(value)
    values = _as_list(value)
    return [tuple(v) if key.endswith("milestones") and isinstance(v, list) else None if v == "None" else v
            for v in values]


def _data_present(dataset: str, data_dir: Path) -> bool:
    from ..data.datasets import DATASETS

    return (data_dir / DATASETS[dataset].folder).exists()


def expand_grid(experiment: str | Sequence[str], alpha_conv: float | Sequence[float] | None = None,
                alpha_fc: float | Sequence[float] | None = None, seeds: int | Sequence[int] = (0,),
                methods: str | Sequence[str] = ("relief",), profile: str = "cpu",
                params: Mapping[str, Any] | None = None, data_dir: str | os.PathLike | None = None) -> list[SweepRun]:
    """Every run of the grid, NNrelief references first. ``None`` alphas keep the preset's value.

    A point whose config is invalid (e.g. ``alpha_fc=1.5``) becomes a :class:`SweepRun` with ``config=None``
    and its error, reported like a failed run. With the ``smoke`` profile and the data set absent from
    ``data_dir``, runs use the synthetic stand-in (as notebooks do) and say so.
    """
    from ..experiments.presets import EXPERIMENTS, PROFILES, experiment_config
    from ..pruning.methods import list_methods

    unknown_names = [e for e in _as_list(experiment) if e not in EXPERIMENTS]
    if unknown_names or profile not in PROFILES:
        raise KeyError(f"unknown experiment(s) {unknown_names} or profile {profile!r}; experiments: "
                       f"{', '.join(sorted(EXPERIMENTS))}; profiles: {', '.join(PROFILES)}")
    data_path = Path(data_dir) if data_dir is not None else paths.default_data_dir()
    # seeds and methods are always axes: a tuple of them is several values, not one
    methods = list(methods) if isinstance(methods, tuple) else _as_list(methods)
    seeds = list(seeds) if isinstance(seeds, tuple) else seeds
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(list_methods())}")
    if "relief" not in methods:  # baselines need their reference; its rows are in the table too
        methods = ["relief", *methods]
    methods = ["relief"] + [m for m in dict.fromkeys(methods) if m != "relief"]
    axes = {k: _param_axis(k, v) for k, v in (params or {}).items()}
    runs: dict[str, SweepRun] = {}
    for name in _as_list(experiment):
        for ac, af, seed, *extra in itertools.product(_as_list(alpha_conv), _as_list(alpha_fc), _as_list(seeds),
                                                      *axes.values()):
            overrides = dict(zip(axes, extra))
            varying = {k: v for k, v in overrides.items() if len(axes[k]) > 1}
            fixed = {"alpha_conv": ac, "alpha_fc": af, "seed": seed}
            overrides.update({k: v for k, v in fixed.items() if v is not None})
            reference: SweepRun | None = None
            for method in methods:
                coords = {"experiment": name, "method": method, "alpha_conv": ac, "alpha_fc": af, "seed": seed,
                          **varying}
                try:
                    if method != "relief" and (reference is None or reference.config is None):
                        raise ValueError(f"its NNrelief reference run could not be built "
                                         f"({reference.error if reference else 'missing'})")
                    cfg = experiment_config(name, profile, **overrides)
                    if profile == "smoke" and not cfg.data.synthetic and not _data_present(cfg.data.name, data_path):
                        warnings.warn(f"{cfg.data.name} is not in {data_path}: the smoke sweep runs {name} on a "
                                      "SYNTHETIC stand-in (its numbers are not results)", stacklevel=2)
                        cfg = override(cfg, synthetic=True)
                    relief = cfg.method.relief
                    coords.update(alpha_conv=relief.alpha_conv, alpha_fc=relief.alpha_fc, seed=cfg.seed)
                    if method != "relief" and reference is not None:
                        cfg = override(cfg, method=method, reference=reference.name.rsplit("/", 1)[0])
                    run = SweepRun(coords, cfg, reference=reference.name if reference else None,
                                   name=Run(cfg, data_dir=data_path, device="cpu", progress=False).run_name())
                except Exception as err:  # an invalid point is reported, the grid goes on
                    run = SweepRun(coords, None, f"{type(err).__name__}: {err}",
                                   reference=reference.name if reference else None)
                if method == "relief":
                    reference = run
                runs.setdefault(run.name, run)
    return list(runs.values())


def grid_errors(runs: list[SweepRun], data_dir: str | os.PathLike) -> list[str]:
    """What is wrong with a grid before any of it runs: every point's config (the validation of a single run), its
    data (present, labels in range; loaded once per data setting) and its validation split against the training
    data. One line per distinct problem, naming the points; a baseline failing only with its reference is left
    out (its reference is listed)."""
    sizes: dict[Any, int] = {}
    problems: dict[str, list[str]] = {}
    for run in runs:
        point = ", ".join(f"{k}={v}" for k, v in run.coords.items() if v is not None)
        error = run.error
        if run.config is not None:
            cfg = run.config
            try:
                checker = Run(cfg, data_dir=data_dir, device="cpu", progress=False)
                key = (cfg.data, cfg.seed if cfg.data.synthetic else None)
                if key not in sizes:
                    sizes[key] = checker.train_size()
                checker.check_val_size(sizes[key])
            except Exception as err:
                error = f"{type(err).__name__}: {err}"
        if error and "its NNrelief reference run could not be built" not in error:
            problems.setdefault(error, []).append(f"({point})")
    return [f"{' '.join(points)}: {error}" for error, points in problems.items()]


def load_grid(path: str | os.PathLike) -> dict[str, Any]:
    """A grid from a TOML file: the keys of :data:`GRID_KEYS` (``experiment``, ``alpha_fc``, ``seeds``,
    ``methods``, ``profile``, a ``[params]`` table, ...); ``name`` defaults to the file's stem."""
    import tomllib

    with open(path, "rb") as f:
        grid = tomllib.load(f)
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown grid key(s) {unknown}; valid keys: {', '.join(GRID_KEYS)}")
    grid.setdefault("name", Path(path).stem)
    return grid
