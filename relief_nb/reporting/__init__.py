"""What results look like: tables (:mod:`.tables`), figures (:mod:`.plots`), the published numbers they are
compared with (:mod:`.published`) and the marks of non-results (:mod:`.marks`).

May import: :mod:`relief_nb.experiments` and everything below it.
"""
