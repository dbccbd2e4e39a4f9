"""What the notebooks import (``import relief_nb.notebooks as rnb``): the session of one notebook (parameters,
runs, tables, figures: :mod:`.session`), papermill execution for the command line (:mod:`.batch`) and the
notebooks' sources (``templates/``).

May import: :mod:`relief_nb.sweeps` and everything below it.
"""

from .api import (
    NOTEBOOKS,
    TABLES,
    AlphaExplorer,
    Session,
    alpha_sweep,
    check_parameters,
    gather_results,
    plot_sweep,
    run_sweep_notebook,
    start,
    summary_table,
)

__all__ = ["NOTEBOOKS", "TABLES", "AlphaExplorer", "Session", "alpha_sweep", "check_parameters", "gather_results", "plot_sweep",
           "run_sweep_notebook", "start", "summary_table"]
