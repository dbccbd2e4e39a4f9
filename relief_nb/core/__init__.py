"""The method's math on one layer: importance scores (:mod:`.scores`, with the compiled kernel :mod:`.native` and
its C source in ``csrc/``; :mod:`.general_scores` for every other convolution and embedding tables), where a layer
keeps its units (:mod:`.units`), what a scoring batch may be (:mod:`.batches`), the alpha selection rule
(:mod:`.selection`), masks through ``torch.nn.utils.prune`` (:mod:`.masks`) and eval mode (:mod:`.modes`).

May import: :mod:`relief_nb.common` only. Knows nothing of graphs, models or data sets.
"""
