"""NNrelief's selection rule: per unit, keep the smallest set of connections carrying a fraction alpha.

For one unit with scores ``s`` (incoming connections and the bias together), sorted descending as
``s_(1) >= s_(2) >= ... >= s_(M)`` with total ``S = sum s``:

* ``"paper"``: ``p0 = min { p : sum_{k<=p} s_(k) >= alpha * S }``; keep every entry with
  ``s >= s_(p0)`` (the top p0 and all ties with the p0-th score), so the kept mass is always >= alpha S.
* ``"code"`` (the authors' repository, 0-based): ``q = #{k : cumsum_k < alpha S}``,
  ``pivot = q + 1 if q < M - 1 else M - 1``; prune every entry ``<= s_(pivot)``.

Entries scoring 0 (already pruned, or fed by a silent input) are never kept. Both rules run on all units of
a layer at once (one sort, one cumsum).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

__all__ = ["SELECTION_RULES", "SelectionRule", "check_alpha", "select"]

SelectionRule = Literal["paper", "code"]
SELECTION_RULES: tuple[str, ...] = ("paper", "code")


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return ``alpha`` as a float if it lies in (0, 1], else raise a ValueError that says how to fix it."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1], got {alpha!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1] (the fraction of each unit's signal to keep), got {alpha}; "
                         "for example 0.95")
    return value


def select(scores: torch.Tensor, alpha: float, rule: SelectionRule = "paper") -> torch.Tensor:
    """Boolean keep-mask of the same shape as ``scores`` (units x connections), one row per unit."""
    alpha = check_alpha(alpha)
    if rule not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose one of {SELECTION_RULES}")
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (units x connections), got shape {tuple(scores.shape)}")
    if scores.numel() == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if alpha == 1.0 and rule == "paper":
        return scores > 0  # the whole mass: exact, whatever the rounding of a long cumulative sum
    # sorted in their own dtype (widening is exact, so the order is the same), summed in float64 so that small
    # scores are not lost in the rounding of a float32 cumulative sum
    ordered = _sorted_descending(scores)
    csum = ordered.to(torch.float64).cumsum(dim=1)
    target = alpha * csum[:, -1:]
    below = (csum < target).sum(dim=1, keepdim=True)
    m = scores.shape[1]
    if rule == "paper":
        threshold = ordered.gather(1, below.clamp(max=m - 1))
        return (scores >= threshold) & (scores > 0)
    pivot = torch.where(below < m - 1, below + 1, torch.full_like(below, m - 1))
    return scores > ordered.gather(1, pivot)


def _sorted_descending(scores: torch.Tensor) -> torch.Tensor:
    """Each row's values, largest first (values only: the rule compares scores with a threshold)."""
    if scores.device.type == "cpu":
        # numpy's SIMD sort is ~6x faster than torch.sort on CPU (LeNet-300-100's fc1: 1.0 ms vs 5.6 ms)
        return torch.from_numpy(np.sort(scores.detach().numpy(), axis=1)[:, ::-1].copy())
    return scores.sort(dim=1, descending=True).values
