"""An experiment's configuration: nested and typed, with one table of flat setting names for the command line,
notebooks and sweeps.

``ExperimentConfig`` holds the model, the data (:class:`DataConfig`), the pruning method with its own settings
(:class:`MethodConfig`, whose ``relief`` is a :class:`~relief_nb.pruning.relief.ReliefConfig`), the schedule
with its two training stages (:class:`ScheduleConfig`, :class:`~relief_nb.experiments.training.TrainConfig`) and
the seed. Every leaf has a flat name (:data:`SETTINGS`: ``alpha_fc`` is ``method.relief.alpha_fc``,
``pretrain_epochs`` is ``schedule.pretrain.epochs``), which is what ``-p alpha_fc=0.9``, a sweep's ``params``
and :func:`override` take.

A run's identity is its :meth:`ExperimentConfig.identity`: the flat settings that differ from the defaults (so a
setting added later with a default leaves existing runs where they are), stopping rules excluded.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..common.paths import safe_name
from ..common.validation import expect
from ..data.datasets import DATASETS
from ..models.zoo import MODELS, family_of
from ..pruning.methods import list_methods
from ..pruning.relief import ReliefConfig
from .training import TrainConfig

__all__ = ["EXECUTION_SETTINGS", "SETTINGS", "STOPPING_RULES", "DataConfig", "ExperimentConfig", "MethodConfig",
           "ScheduleConfig", "override", "parse_assignments"]

# stopping rules: a run that goes further extends the same folder, so they are not part of a run's identity
STOPPING_RULES = ("iterations", "target_compression")
# how a run is computed, not what it computes (same results up to float rounding): not part of its identity either
EXECUTION_SETTINGS = ("compact",)


@dataclass(frozen=True)
class DataConfig:
    """Which data a run reads, and how much of it."""

    name: str = "mnist"  # a registered data set, or a label for the data passed as Run(..., data=...)
    synthetic: bool = False  # a stand-in of the right shape (smoke runs; numbers are not results)
    n_train: int | None = None  # subsets for quick runs (None: everything)
    n_test: int | None = None
    val_size: int = 5000  # training examples held out for validation
    scoring_size: int = 1000  # training examples the pruning pass scores on (fixed, no augmentation)

    def __post_init__(self) -> None:
        expect("dataset", self.name, (str,), lambda v: bool(v.strip()), "a non-empty name", "mnist")
        safe_name(self.name, "dataset", example="mnist")  # a label in the run folder's name, never a path
        expect("synthetic", self.synthetic, (bool,), example="True")
        for name in ("n_train", "n_test"):
            expect(name, getattr(self, name), (int, type(None)), lambda v: v >= 1, "None or an integer >= 1", "1000")
        for name, example in (("val_size", "5000"), ("scoring_size", "1000")):
            expect(name, getattr(self, name), (int,), lambda v: v >= 1, "an integer >= 1", example)
        if self.synthetic and self.name not in DATASETS:
            raise KeyError(f"synthetic stand-ins exist for the registered data sets only ({', '.join(DATASETS)}), "
                           f"not {self.name!r}")


@dataclass(frozen=True)
class MethodConfig:
    """The pruning method (a name of :mod:`relief_nb.pruning.methods`) and its settings. A baseline is pruned, at every
    iteration, to the per-layer budget of its ``reference``: the NNrelief experiment's folder name, beside its own
    (a name, not a path, so the same baseline is one run from anywhere), whose run of the same seed it follows; its
    ``relief`` settings name the reference."""

    name: str = "relief"
    relief: ReliefConfig = field(default_factory=ReliefConfig)
    reference: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.relief, ReliefConfig):
            raise ValueError(f"method.relief must be a ReliefConfig, got {self.relief!r}")
        if self.name not in list_methods():
            raise ValueError(f"unknown method {self.name!r}; choose one of {list_methods()}")
        if self.name != "relief" and self.reference is None:
            raise ValueError(f"the {self.name} baseline needs reference=<folder name of an NNrelief experiment>")
        expect("reference", self.reference, (str, type(None)), example="<an NNrelief experiment's folder name>")
        if self.reference is not None:  # <experiment> or <experiment>/seed_<k>, never a path that leaves the runs
            experiment, slash, seed = self.reference.partition("/")
            if slash and not (experiment and re.fullmatch(r"seed_\d+", seed)):
                raise ValueError(f"reference {self.reference!r} is not a plain name: write an NNrelief experiment's "
                                 "folder name, or <experiment>/seed_<k> for one of its runs (never a path)")
            safe_name(experiment, "reference", example="<an NNrelief experiment's folder name>")


def _paper_stage() -> TrainConfig:
    return TrainConfig(60, "adam", 1e-3, milestones=(30,))


@dataclass(frozen=True)
class ScheduleConfig:
    """Pretraining, then ``iterations`` x (prune, rewind or fine-tune, retrain), and when to stop early."""

    iterations: int = 20
    pretrain: TrainConfig = field(default_factory=_paper_stage)
    retrain: TrainConfig = field(default_factory=_paper_stage)
    rewind: bool | None = None  # None: LeNets are rewound to their initial weights, other models fine-tuned
    tolerance: float | None = None  # stop once val accuracy < baseline - tolerance (fraction, e.g. 0.005)
    target_compression: float | None = None  # stop at the first iteration whose compression reaches this
    alpha_increment: float = 0.0  # beyond the paper: iteration k prunes at min(alpha + (k - 1) * increment, 1)
    compact: bool = True  # retrain a copy with removed units sliced away (relief_nb.graph.compact); same results

    def __post_init__(self) -> None:
        expect("iterations", self.iterations, (int,), lambda v: v >= 0, "an integer >= 0", "20")
        expect("alpha_increment", self.alpha_increment, (int, float), lambda v: 0 <= v < 1, "a number in [0, 1)",
               "0.01")
        expect("compact", self.compact, (bool,), example="False")
        for stage in ("pretrain", "retrain"):
            if not isinstance(getattr(self, stage), TrainConfig):
                raise ValueError(f"{stage} must be a TrainConfig, got {getattr(self, stage)!r}")
        if self.pretrain.distill:
            raise ValueError(f"pretrain_distill must be 0, got {self.pretrain.distill}: distillation learns from the "
                             "dense network, which pretraining makes; use retrain_distill")
        expect("rewind", self.rewind, (bool, type(None)), example="True")
        expect("tolerance", self.tolerance, (int, float, type(None)), lambda v: v >= 0,
               "None or a fraction of accuracy >= 0", "0.005")
        expect("target_compression", self.target_compression, (int, float, type(None)), lambda v: v > 1,
               "None or a number > 1", "50")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run. Defaults: LeNet-300-100 on MNIST at the paper's settings (docs/method.md).

    ``model``: a registered name (``relief-nb list``), a factory ``"package.module:function"``, or a label for
    the factory passed as ``Run(..., model=...)``. Build one from flat names with :meth:`of`
    (``ExperimentConfig.of(model="lenet5", alpha_fc=0.9, pretrain_epochs=10)``), change one with :func:`override`.
    """

    model: str = "lenet300-100"
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        expect("model", self.model, (str,), lambda v: bool(v.strip()), "a non-empty name", "lenet5")
        expect("seed", self.seed, (int,), example="0")
        for name, kind in (("data", DataConfig), ("method", MethodConfig), ("schedule", ScheduleConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")

    @classmethod
    def of(cls, **settings: Any) -> ExperimentConfig:
        """The default config with ``settings`` given by flat name (:data:`SETTINGS`) or dotted path."""
        return override(cls(), **settings)

    @property
    def rewinds(self) -> bool:
        """Rewind to the initial weights before retraining: LeNets by default (as in the paper), and models of
        your own only when ``rewind=True``."""
        if self.schedule.rewind is not None:
            return bool(self.schedule.rewind)
        return self.model in MODELS and family_of(self.model) == "lenet"

    def relief_at(self, iteration: int) -> ReliefConfig:
        """The NNrelief pass of iteration ``iteration`` (1-based): the method's alphas, raised by the schedule's
        ``alpha_increment`` per iteration after the first (beyond the paper; 0 keeps them constant, as it does)."""
        step, relief = self.schedule.alpha_increment * (iteration - 1), self.method.relief
        if not step:
            return relief
        return replace(relief, alpha_conv=min(relief.alpha_conv + step, 1.0),
                       alpha_fc=min(relief.alpha_fc + step, 1.0))

    @property
    def is_baseline(self) -> bool:
        return self.method.name != "relief"

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Nested, as in ``config.json``."""
        d = asdict(self)
        for stage in ("pretrain", "retrain"):
            d["schedule"][stage] = getattr(self.schedule, stage).to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        """From :meth:`to_dict`'s layout, or from relief_nb 0.1's flat one (every setting at the top level)."""
        if "data" not in d and "schedule" not in d:  # 0.1: flat, stages as dicts
            return cls.of(**{k: TrainConfig(**v) if k in ("pretrain", "retrain") and isinstance(v, dict) else v
                             for k, v in d.items()})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown experiment settings {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        schedule = dict(d.get("schedule", {}))
        for stage in ("pretrain", "retrain"):
            if isinstance(schedule.get(stage), dict):
                schedule[stage] = TrainConfig(**schedule[stage])
        method = dict(d.get("method", {}))
        if isinstance(method.get("relief"), dict):
            method["relief"] = ReliefConfig(**method["relief"])
        return cls(model=d.get("model", cls.model), data=DataConfig(**d.get("data", {})),
                   method=MethodConfig(**method), schedule=ScheduleConfig(**schedule), seed=d.get("seed", 0))

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name (training stages as dicts, not field by field)."""
        out = {}
        for name, path in SETTINGS.items():
            if name not in _STAGE_FIELDS:
                value = _get(self, path)
                out[name] = value.to_dict() if isinstance(value, TrainConfig) else value
        return out

    # ---------------------------------------------------------------- identity
    def identity(self) -> dict[str, Any]:
        """The settings that define the run's results: flat settings that differ from the defaults (OpenLTH's
        rule), stopping rules and execution settings excluded."""
        mine, default = self.flat(), ExperimentConfig().flat()
        return {k: v for k, v in mine.items()
                if k not in STOPPING_RULES + EXECUTION_SETTINGS and v != default[k]}

    def experiment_name(self, data_fingerprint: str, model_fingerprint: str | None = None) -> str:
        """The experiment's folder, shared by its seeds: the main settings, then a hash of :meth:`identity` (seed
        aside), the fingerprint of the data read and, for a model of your own, of its initial weights."""
        identity = {k: v for k, v in self.identity().items() if k != "seed"}
        key = {**identity, "data": data_fingerprint, "model_weights": model_fingerprint}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self._readable(_slug)}_{digest}"

    def run_name(self, data_fingerprint: str, model_fingerprint: str | None = None) -> str:
        """The run's folder relative to the runs folder: ``<experiment>/seed_<seed>`` (seeds as folders)."""
        return f"{self.experiment_name(data_fingerprint, model_fingerprint)}/seed_{self.seed}"

    def interim_run_name(self, data_fingerprint: str, model_fingerprint: str | None = None) -> str:
        """The flat name development versions of 0.2 used (``..._s<seed>_<hash>``), for migration."""
        key = {**self.identity(), "data": data_fingerprint, "model_weights": model_fingerprint}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self._readable(_slug)}_s{self.seed}_{digest}"

    def _readable(self, slug=lambda s: s) -> str:
        data = f"{slug(self.data.name)}{'-synthetic' if self.data.synthetic else ''}"
        method = f"_{self.method.name}" if self.is_baseline else ""
        relief = self.method.relief
        return f"{slug(self.model)}_{data}{method}_ac{relief.alpha_conv:g}_af{relief.alpha_fc:g}"

    def legacy_run_name(self) -> str:
        """The folder name relief_nb 0.1 gave this run (every setting hashed, iterations in the name), for
        migration; a baseline's reference is translated to its reference's legacy name."""
        flat = self.flat()
        d = {k: flat[k] for k in _LEGACY_SETTINGS}
        if self.is_baseline:
            d["reference"] = override(self, method="relief", reference=None).legacy_run_name()
        digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self._readable()}_it{self.schedule.iterations}_s{self.seed}_{digest}"


# flat name -> path in the nested config: the one table the CLI, notebooks, sweeps and presets go through
SETTINGS: dict[str, str] = {
    "model": "model", "seed": "seed",
    **{k: f"data.{v}" for k, v in (("dataset", "name"), ("synthetic", "synthetic"), ("n_train", "n_train"),
                                   ("n_test", "n_test"), ("val_size", "val_size"), ("scoring_size", "scoring_size"))},
    "method": "method.name", "reference": "method.reference",
    **{k: f"method.relief.{k}" for k in ("alpha_conv", "alpha_fc", "conv_aggregation", "selection", "dead_units",
                                         "residual_rule", "backward_pruning", "chunk_size")},
    **{k: f"schedule.{k}" for k in ("iterations", "pretrain", "retrain", "rewind", "tolerance",
                                    "target_compression", "alpha_increment", "compact")},
}
_STAGE_FIELDS = {f"{stage}_{f.name}": f"schedule.{stage}.{f.name}" for stage in ("pretrain", "retrain")
                 for f in fields(TrainConfig)}
SETTINGS.update(_STAGE_FIELDS)

_LEGACY_SETTINGS = ("model", "dataset", "alpha_conv", "alpha_fc", "iterations", "pretrain", "retrain", "rewind",
                    "scoring_size", "val_size", "conv_aggregation", "selection", "tolerance", "target_compression",
                    "seed", "synthetic", "n_train", "n_test", "method", "reference")


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class _Branch(dict):
    """Changes below one field of a nested config (a plain dict could be a value)."""


def _apply(obj: Any, tree: _Branch) -> Any:
    """A copy of the frozen ``obj`` with every change of ``tree`` made at once, level by level (so fields that
    are validated together, like a baseline's method name and reference, change together)."""
    return replace(obj, **{k: _apply(getattr(obj, k), v) if isinstance(v, _Branch) else v for k, v in tree.items()})


def override(config: ExperimentConfig, **changes: Any) -> ExperimentConfig:
    """A copy of ``config`` with ``changes``, by flat name (:data:`SETTINGS`) or dotted path
    (``**{"data.n_train": 1000}``). Unknown names are refused with the list of valid ones."""
    unknown = [k for k in changes if k not in SETTINGS and not _is_path(k)]
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; valid: {sorted(SETTINGS)}")
    paths = {SETTINGS.get(k, k): v for k, v in changes.items()}
    try:
        # a whole object changed together with fields inside it (pretrain=... and pretrain_epochs=...): object first
        outer = [p for p in paths if any(q.startswith(p + ".") for q in paths)]
        for path in outer:
            config = _apply(config, _tree({path: paths.pop(path)}))
        return _apply(config, _tree(paths))
    except ValueError as err:
        raise _named(err, changes) from None


def _named(err: ValueError, changes: dict[str, Any]) -> ValueError:
    """A nested field's error under the name the user gave (``retrain_epochs``, not ``epochs``)."""
    msg = str(err)
    for key in changes:
        leaf = SETTINGS.get(key, key).rsplit(".", 1)[-1]
        if key != leaf and msg.startswith(f"{leaf} must"):
            return ValueError(key + msg[len(leaf):].replace(f" {leaf}=", f" {key}="))
    return err


def _tree(paths: dict[str, Any]) -> _Branch:
    tree = _Branch()
    for path, value in paths.items():
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, _Branch())
        node[leaf] = value
    return tree


def _is_path(key: str) -> bool:
    try:
        _get(ExperimentConfig(), key)
    except AttributeError:
        return False
    return "." in key


def _slug(text: str) -> str:
    """A name usable in a folder name (a factory ``pkg.mod:fn`` becomes ``pkg.mod-fn``)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "custom"


def parse_assignments(pairs: list[str]) -> dict[str, Any]:
    """``["alpha_fc=0.9", "tolerance=None"]`` -> dict, values read as Python literals where they parse."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"-p expects NAME=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key.strip()] = raw
    return out
