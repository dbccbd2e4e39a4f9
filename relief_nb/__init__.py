"""relief_nb: Neural network relief (NNrelief, Dekhovich et al., arXiv:2109.10795) for notebooks.

The pieces, each in its own module:

* :mod:`relief_nb.models`: the paper's architectures by name (``create_model("lenet5")``);
* :mod:`relief_nb.graph` (entry point :mod:`relief_nb.structure`): the model traced once (``torch.fx``) into
  its dependency graph: which layers read whose units, through which merges;
* :mod:`relief_nb.scores` / :mod:`relief_nb.selection`: importance scores and the alpha rule;
* :mod:`relief_nb.relief`: one pruning pass (``relief_prune(model, batch, ReliefConfig(...))``), the scores it
  selects from (``score_layers``), :class:`ReliefWarning` for passes a user would not expect;
* :mod:`relief_nb.methods`: NNrelief and the baselines (magnitude, random, SNIP, MagAct) behind one interface,
  by name (``get_method("snip").prune(graph, x, y, Budget.of(reference_graph))``);
* :mod:`relief_nb.masks`: ``torch.nn.utils.prune`` masks (the one place that reads ``weight_orig`` / masks),
  state_dict round trips, ``make_permanent``; :mod:`relief_nb.modes`: ``eval_mode``;
* :mod:`relief_nb.metrics`: remaining parameters, compression, alive units, FLOPs;
* :mod:`relief_nb.data`, :mod:`relief_nb.userdata`, :mod:`relief_nb.training`, :mod:`relief_nb.experiment`,
  :mod:`relief_nb.presets`: registered data sets and your own, training, and the iterative prune-retrain
  experiment on any model factory;
* :mod:`relief_nb.sweep`: grids of runs (alphas x seeds x methods) on Dask, aggregated over seeds;
* :mod:`relief_nb.fingerprint`: the CPU-independent check the notebooks' nbval cells compare;
* :mod:`relief_nb.plots`, :mod:`relief_nb.session` / :mod:`relief_nb.tables` / :mod:`relief_nb.batch` (what the
  notebooks call, results tables, papermill execution), :mod:`relief_nb.cli`: figures, notebooks, command line;
* :mod:`relief_nb.paths`: where data, runs, notebooks and figures live.
"""

from .experiment import ExperimentConfig, Run, run_experiment
from .masks import load_pruned_state_dict, make_permanent
from .methods import Budget, PruningMethod, ReliefMethod, get_method, list_methods, register_method
from .metrics import count_parameters, layer_table, summary
from .models import create_model, input_shape_of, list_models
from .presets import experiment_config, list_experiments
from .relief import ReliefConfig, ReliefWarning, relief_prune, score_layers
from .selection import select
from .structure import UnsupportedModuleError, trace_model
from .sweep import aggregate, run_sweep
from .training import TrainConfig
from .userdata import as_dataset

__version__ = "0.2.0"

__all__ = [
    "Budget",
    "ExperimentConfig",
    "PruningMethod",
    "aggregate",
    "run_sweep",
    "ReliefConfig",
    "ReliefMethod",
    "ReliefWarning",
    "Run",
    "TrainConfig",
    "as_dataset",
    "UnsupportedModuleError",
    "count_parameters",
    "create_model",
    "experiment_config",
    "get_method",
    "input_shape_of",
    "layer_table",
    "list_experiments",
    "list_methods",
    "list_models",
    "load_pruned_state_dict",
    "make_permanent",
    "register_method",
    "relief_prune",
    "run_experiment",
    "score_layers",
    "select",
    "summary",
    "trace_model",
]
