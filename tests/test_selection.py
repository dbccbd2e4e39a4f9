"""The selection rule: the table of docs/method.md under the paper's and the code's rule, and properties."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relief_nb.core.selection import check_alpha, select

TABLE = [
    # scores (last = bias), alpha, code keeps (indices), paper keeps (indices)
    ([5, 3, 1, 1, 0.5], 0.90, [0, 1, 2, 3], [0, 1, 2, 3]),
    ([4, 4, 1, 1], 0.50, [0, 1], [0, 1]),
    ([6, 2, 1, 1], 0.95, [0, 1], [0, 1, 2, 3]),
    ([1, 1, 1, 1], 0.90, [], [0, 1, 2, 3]),
]


@pytest.mark.parametrize("scores, alpha, code, paper", TABLE)
def test_spec_table(scores, alpha, code, paper):
    s = torch.tensor([scores], dtype=torch.float64)
    for rule, expected in (("code", code), ("paper", paper)):
        keep = select(s, alpha, rule)[0]
        assert keep.nonzero().flatten().tolist() == expected, rule


def test_spec_table_in_one_batched_call():
    """All rows at once (zero-padded, zeros never kept) with shuffled columns: the paper rule is per row.

    (The code rule's last-entry exception depends on the row length, so padding would change it.)"""
    perm = torch.tensor([3, 0, 4, 1, 2])
    rows = torch.tensor([r[0] + [0.0] * (5 - len(r[0])) for r in TABLE], dtype=torch.float64)[:, perm]
    for rule, col in (("paper", 3),):
        for alpha in {r[1] for r in TABLE}:
            keep = select(rows, alpha, rule)
            for i, row in enumerate(TABLE):
                if row[1] == alpha:
                    assert sorted(perm[keep[i]].tolist()) == row[col], (rule, i)


scores_strategy = st.lists(
    st.lists(st.floats(0, 100, allow_nan=False, allow_infinity=False), min_size=1, max_size=12),
    min_size=1, max_size=6,
).filter(lambda rows: len({len(r) for r in rows}) == 1)


@settings(max_examples=200, deadline=None)
@given(rows=scores_strategy, alpha=st.floats(0.01, 1.0))
def test_paper_rule_keeps_at_least_alpha(rows, alpha):
    s = torch.tensor(rows, dtype=torch.float64)
    keep = select(s, alpha, "paper")
    kept = (s * keep).sum(1)
    assert (kept >= alpha * s.sum(1) - 1e-9 * (1 + s.sum(1))).all()
    # minimality: dropping the smallest kept entry (with its ties) would fall below alpha
    for row, k in zip(s, keep):
        if k.any():
            smallest = row[k].min()
            assert row[k & (row > smallest)].sum() < alpha * row.sum() + 1e-9 * (1 + row.sum())


@settings(max_examples=100, deadline=None)
@given(rows=scores_strategy, alpha=st.floats(0.01, 1.0), rule=st.sampled_from(["paper", "code"]))
def test_masks_never_grow(rows, alpha, rule):
    """Re-selecting with pruned entries scored 0 never revives them."""
    s = torch.tensor(rows, dtype=torch.float64)
    keep1 = select(s, alpha, rule)
    keep2 = select(s * keep1, alpha, rule)
    assert not (keep2 & ~keep1).any()


@pytest.mark.parametrize("alpha", [0, -0.1, 1.01, float("nan"), "a"])
def test_alpha_outside_range_is_refused(alpha):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        select(torch.ones(1, 3), alpha)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        check_alpha(alpha)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="paper"):
        select(torch.ones(1, 3), 0.5, "magic")


def _reference_keep(row: list[float], alpha: float, rule: str) -> list[bool]:
    """The two rules (docs/method.md) written out for one unit: a plain running sum over the scores, largest first."""
    ordered = sorted(row, reverse=True)
    total, running, below = sum(ordered), 0.0, 0
    for s in ordered:
        running += s
        if running < alpha * total:
            below += 1
    below = min(below, len(row) - 1)
    if rule == "paper":
        return [s >= ordered[below] and s > 0 for s in row]
    pivot = below + 1 if below < len(row) - 1 else len(row) - 1
    return [s > ordered[pivot] for s in row]


@pytest.mark.parametrize("rule", ["paper", "code"])
@pytest.mark.parametrize("width", [1, 31, 32, 33, 300, 785])
def test_long_rows_match_a_running_sum(rule, width):
    """Rows longer than one block (the mass is located block by block): same masks as a plain running sum."""
    g = torch.Generator().manual_seed(width)
    for trial in range(6):
        s = torch.rand(40, width, generator=g, dtype=torch.float64) ** (1 + 3 * trial)
        s[torch.rand(40, width, generator=g) < 0.1 * trial] = 0  # pruned entries
        if trial % 2:
            s = (s * 8).round()  # many ties
        for alpha in (0.05, 0.5, 0.9, 0.95, 0.999):
            keep = select(s, alpha, rule)
            expected = torch.tensor([_reference_keep(r, alpha, rule) for r in s.tolist()])
            assert torch.equal(keep, expected), (trial, alpha)


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_negative_or_nan_scores_are_refused(bad):
    s = torch.ones(2, 4)
    s[1, 2] = bad
    with pytest.raises(ValueError, match="non-negative"):
        select(s, 0.9)
