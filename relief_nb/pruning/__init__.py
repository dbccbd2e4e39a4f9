"""A pass over a whole model: the NNrelief pass (:mod:`.relief`), the method registry with the baselines
(:mod:`.methods`, :mod:`.baselines`) and what a pruned model measures (:mod:`.metrics`).

May import: :mod:`relief_nb.graph` and everything below it.
"""
