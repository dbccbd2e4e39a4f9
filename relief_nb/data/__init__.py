"""Data: registered data sets read from their published formats and fetched with checksums (:mod:`.datasets`),
and your own data, tensors or folders (:mod:`.userdata`).

May import: :mod:`relief_nb.common` only (a leaf).
"""

from .datasets import DATASETS, Dataset, fetch, load_dataset, prepare, synthetic_dataset
from .userdata import as_dataset

__all__ = ["DATASETS", "Dataset", "as_dataset", "fetch", "load_dataset", "prepare", "synthetic_dataset"]
