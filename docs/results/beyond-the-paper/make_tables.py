"""The tables and figure of this folder's README: NNrelief with distillation (this folder's aggregate.csv, written
by `relief-nb sweep sweeps/lenet300-paper-distill.toml --collect` and copied here) beside the paper's setting
(the NNrelief columns of ../lenet300-paper.md, three seeds at the same schedule, measured in an earlier session).

    .venv/bin/python docs/results/beyond-the-paper/make_tables.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from relief_nb import error_at_compression, markdown
from relief_nb.sweeps.sweep import plot_sweep

HERE = Path(__file__).parent
PUBLISHED = [("DNS (Guo et al. 2016)", 56, 1.99), ("sparse VD (Molchanov et al. 2017)", 68, 1.92)]


def paper_setting() -> pd.DataFrame:
    """The paper setting's mean ± std per iteration, read from the table of ../lenet300-paper.md."""
    rows = []
    for line in (HERE.parent / "lenet300-paper.md").read_text().splitlines():
        m = re.match(r"\| (\d+) \| ([\d.]+) ± ([\d.]+)x \| ([\d.]+) ± ([\d.]+) \|", line)
        if m:
            k, c, cs, e, es = m.groups()
            rows.append({"iteration": int(k), "compression_mean": float(c), "compression_std": float(cs),
                         "test_error_pct_mean": float(e), "test_error_pct_std": float(es), "n_seeds": 3})
    return pd.DataFrame(rows)


def main() -> None:
    distilled = pd.read_csv(HERE / "aggregate.csv")
    distilled = distilled[distilled.method == "NNrelief"]
    paper = paper_setting()
    template = distilled.iloc[0]
    for col in distilled.columns:
        if col not in paper.columns:
            paper[col] = template[col]
    paper = paper[paper.iteration <= distilled.iteration.max()]
    both = pd.concat([paper.assign(method="NNrelief, paper's setting"),
                      distilled.assign(method="NNrelief + distillation (w 0.5, T 4)")], ignore_index=True)
    for col in ("retrain_distill", "retrain_temperature"):
        if col in both:
            both = both.drop(columns=col)
    per_iteration = both.pivot_table(index="iteration", columns="method",
                                     values=["compression_mean", "test_error_pct_mean", "test_error_pct_std"])
    print(markdown(per_iteration.round(2).reset_index()))
    at = error_at_compression(both, [10, 20, 50, 56, 68, 100])
    print(markdown(at.round(2).reset_index(names="method")))
    for name, c, e in PUBLISHED:
        print(f"{name}: {c}x at {e} %; ours at {c}x: " + ", ".join(
            f"{m}: {v:.2f} % ({v - e:+.2f})" for m, v in error_at_compression(both, [c])[c].items()))
    fig = plot_sweep(both)
    fig.savefig(HERE / "lenet300-distillation.png", dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
