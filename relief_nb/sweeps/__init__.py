"""Grids of runs on Dask, aggregated over seeds with a report (:mod:`.sweep`), and experiment folders that are
not one grid compared side by side (:mod:`.compare`).

May import: :mod:`relief_nb.reporting` and everything below it.
"""
