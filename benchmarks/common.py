"""Shared timing helpers for the benchmarks.

This machine's speed drifts by tens of percent over minutes, so quantities that are compared (a pass and a
forward, a masked and a dense epoch) are timed in interleaved rounds, and each keeps its best round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_best(fns: Mapping[str, Callable[[], object]], rounds: int = 3) -> dict[str, float]:
    """Best time of each function over ``rounds`` rounds that run all of them in turn (after a warm-up round)."""
    best = {name: float("inf") for name in fns}
    for round_ in range(rounds + 1):
        for name, fn in fns.items():
            t = seconds(fn)
            if round_:  # round 0 warms up
                best[name] = min(best[name], t)
    return best


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
