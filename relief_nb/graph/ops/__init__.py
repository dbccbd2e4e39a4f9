"""The walk's rules, one module per op family: prunable layers (:mod:`.layers`), normalizations
(:mod:`.normalization`), shape operations (:mod:`.shape`: reshape, transpose/permute, indexing, reductions,
channel padding) and merges (:mod:`.merges`: residual addition, concatenation, products and gates). Each is a
mixin of the walker in :mod:`relief_nb.graph.trace`, built on :class:`.base.WalkerBase`."""
