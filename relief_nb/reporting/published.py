"""Published numbers to compare with (docs/method.md): LeNet benchmarks on MNIST, error % and compression.

Source: the Sparse VD authors' public README table; DNS's own abstract says 108x for LeNet-5. These are
other papers' numbers, quoted for comparison; nothing here is computed by relief_nb.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["PUBLISHED", "published_table"]

PUBLISHED: list[dict[str, object]] = [
    {"network": "lenet300-100", "method": "dense baseline", "error_pct": 1.64, "compression": 1},
    {"network": "lenet300-100", "method": "magnitude pruning (Han et al. 2015)", "error_pct": 1.59,
     "compression": 12},
    {"network": "lenet300-100", "method": "Dynamic Network Surgery (Guo et al. 2016)", "error_pct": 1.99,
     "compression": 56},
    {"network": "lenet300-100", "method": "Soft weight sharing (Ullrich et al. 2017)", "error_pct": 1.94,
     "compression": 23},
    {"network": "lenet300-100", "method": "Sparse variational dropout (Molchanov et al. 2017)",
     "error_pct": 1.92, "compression": 68},
    {"network": "lenet5", "method": "dense baseline", "error_pct": 0.80, "compression": 1},
    {"network": "lenet5", "method": "magnitude pruning (Han et al. 2015)", "error_pct": 0.77, "compression": 12},
    {"network": "lenet5", "method": "Dynamic Network Surgery (Guo et al. 2016)", "error_pct": 0.91,
     "compression": 108},
    {"network": "lenet5", "method": "Soft weight sharing (Ullrich et al. 2017)", "error_pct": 0.97,
     "compression": 200},
    {"network": "lenet5", "method": "Sparse variational dropout (Molchanov et al. 2017)", "error_pct": 0.75,
     "compression": 280},
]


def published_table(network: str | None = None) -> pd.DataFrame:
    """The published rows (optionally of one network) as a DataFrame."""
    df = pd.DataFrame(PUBLISHED)
    return df[df.network == network].reset_index(drop=True) if network else df
