"""relief_nb: Neural network relief (NNrelief, Dekhovich et al., arXiv:2109.10795) for notebooks.

Everything a user needs is importable from here; the layers below (``docs/architecture.md``), each a folder that
imports only from the ones under it:

* :mod:`relief_nb.common`: where files live, safe names, input checks;
* :mod:`relief_nb.core`: the method's math on one layer: scores, the alpha rule, masks, eval mode;
* :mod:`relief_nb.models`, :mod:`relief_nb.data`: the paper's architectures by name, data sets and your own;
* :mod:`relief_nb.graph`: any model traced once (``torch.fx``) into its dependency graph; export and compaction;
* :mod:`relief_nb.pruning`: one pass on a whole model (``relief_prune``), the method registry and baselines,
  metrics;
* :mod:`relief_nb.experiments`: configuration, presets, training and the iterative prune-retrain run;
* :mod:`relief_nb.reporting`: tables, figures, published numbers;
* :mod:`relief_nb.sweeps`: grids of runs on Dask, comparisons;
* :mod:`relief_nb.notebooks`: what the notebooks call (``import relief_nb.notebooks as rnb``), papermill batch;
* :mod:`relief_nb.cli`: the command line ``relief-nb``.
"""

from typing import Any

from .common.version import __version__
from .core.masks import load_pruned_state_dict, make_permanent, mask_snapshot, restore_masks
from .core.selection import select
from .data.datasets import Dataset, prepare, synthetic_dataset
from .data.userdata import as_dataset
from .experiments.config import DataConfig, ExperimentConfig, MethodConfig, ScheduleConfig, override
from .experiments.presets import experiment_config, list_experiments
from .experiments.run import Run, run_experiment
from .experiments.training import TrainConfig, evaluate, flush_subnormals, make_optimizer, train_epoch
from .graph.compact import CompactModel
from .graph.export import export_pruned, saved_size_bytes
from .graph.nodes import ModelForwardError
from .graph.structure import UnsupportedModuleError, trace_model
from .graph.taxonomy import declare_layer
from .models.zoo import create_model, input_shape_of, list_models
from .pruning.methods import Budget, PruningMethod, ReliefMethod, get_method, list_methods, register_method
from .pruning.metrics import count_parameters, layer_table, summary
from .pruning.relief import ReliefConfig, ReliefWarning, relief_prune, score_layers, trace_for_batch
from .reporting.tables import error_at_compression, markdown, published_crossings
from .sweeps.sweep import aggregate, execute_run, expand_grid, run_sweep

__all__ = [
    "Budget",
    "CompactModel",
    "DataConfig",
    "Dataset",
    "ExperimentConfig",
    "MethodConfig",
    "ModelForwardError",
    "PruningMethod",
    "ReliefConfig",
    "ReliefMethod",
    "ReliefWarning",
    "Run",
    "ScheduleConfig",
    "TrainConfig",
    "UnsupportedModuleError",
    "__version__",
    "aggregate",
    "as_dataset",
    "count_parameters",
    "declare_layer",
    "create_model",
    "error_at_compression",
    "evaluate",
    "execute_run",
    "expand_grid",
    "experiment_config",
    "export_pruned",
    "flush_subnormals",
    "get_method",
    "input_shape_of",
    "layer_table",
    "list_experiments",
    "list_methods",
    "list_models",
    "load_pruned_state_dict",
    "make_optimizer",
    "make_permanent",
    "markdown",
    "mask_snapshot",
    "override",
    "plots",
    "prepare",
    "published_crossings",
    "register_method",
    "relief_prune",
    "restore_masks",
    "run_experiment",
    "run_sweep",
    "saved_size_bytes",
    "score_layers",
    "select",
    "summary",
    "synthetic_dataset",
    "trace_for_batch",
    "trace_model",
    "train_epoch",
]


def __getattr__(name: str) -> Any:
    """``relief_nb.plots`` (the figures) is imported on first use: matplotlib stays out of ``import relief_nb``."""
    if name == "plots":
        from .reporting import plots

        return plots
    raise AttributeError(f"module 'relief_nb' has no attribute {name!r}")
