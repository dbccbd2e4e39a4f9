"""The method's math on one layer: importance scores (:mod:`.scores`, with the compiled kernel :mod:`.native` and
its C source in ``csrc/``), the alpha selection rule (:mod:`.selection`), masks through ``torch.nn.utils.prune``
(:mod:`.masks`) and eval mode (:mod:`.modes`).

May import: :mod:`relief_nb.common` only. Knows nothing of graphs, models or data sets.
"""
