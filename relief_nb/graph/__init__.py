"""Any model's structure: the ``torch.fx`` trace and the walk that turns it into a dependency graph (which layers
read whose units, through which merges, gates and normalizations: :mod:`.trace`), its pruning view
(:mod:`.structure`), the export of a pruned model with its dead units sliced away (:mod:`.export`) and the compact
copy retrained in place of the masked model (:mod:`.compact`).

May import: :mod:`relief_nb.core`, :mod:`relief_nb.models`, :mod:`relief_nb.common`.
"""
