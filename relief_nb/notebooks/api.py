"""What the notebooks import (``import relief_nb.notebooks as rnb``): the session, its tables and helpers.

The pieces live in their own modules: :mod:`relief_nb.session` (parameters, runs, figures of one notebook),
:mod:`relief_nb.tables` (results tables), :mod:`relief_nb.batch` (papermill execution for the command line).
"""

from .session import NOTEBOOKS, TABLES, Session, check_parameters, start
from .tables import alpha_sweep, gather_results, summary_table

__all__ = ["NOTEBOOKS", "TABLES", "Session", "alpha_sweep", "check_parameters", "gather_results", "start",
           "summary_table"]
