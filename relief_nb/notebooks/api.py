"""What the notebooks import (``import relief_nb.notebooks as rnb``): the session, its tables and helpers.

The pieces live in their own modules: :mod:`relief_nb.notebooks.session` (parameters, runs, figures of one
notebook), :mod:`relief_nb.reporting.tables` (results tables), :mod:`relief_nb.sweeps.sweep` (the sweep notebook's
grid), :mod:`relief_nb.notebooks.batch` (papermill execution for the command line).
"""

from ..reporting.tables import alpha_sweep, gather_results, summary_table
from ..sweeps.sweep import from_notebook as run_sweep_notebook
from ..sweeps.sweep import plot_sweep
from .explorer import AlphaExplorer
from .session import Session, start
from .specs import NOTEBOOKS, TABLES, check_parameters

__all__ = ["NOTEBOOKS", "TABLES", "AlphaExplorer", "Session", "alpha_sweep", "check_parameters", "gather_results", "plot_sweep",
           "run_sweep_notebook", "start", "summary_table"]
