"""Draw docs/figures/architecture.png from the layers contract in pyproject.toml and the package's modules.

    .venv/bin/python docs/make_architecture_figure.py

Each row is a layer (top: may import everything below it); each box is a subpackage with its modules.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import tomllib
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "relief_nb"
ROLES = {"cli": "the relief-nb command", "notebooks": "what notebooks call; papermill batch; the templates",
         "sweeps": "grids of runs on Dask; comparisons", "reporting": "tables, figures, published numbers",
         "experiments": "config, presets, training, the prune-retrain run and its folder",
         "pruning": "one pass on a whole model: NNrelief, baselines, metrics",
         "graph": "any model traced (torch.fx) into its dependency graph; export; compaction",
         "core": "one layer: scores, alpha rule, masks", "models": "the paper's networks",
         "data": "data sets and your own", "common": "paths, safe names, checks, version"}
COLOURS = ["#f4cccc", "#fce5cd", "#fff2cc", "#d9ead3", "#d0e0e3", "#cfe2f3", "#d9d2e9", "#ead1dc", "#eeeeee"]


def layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    contract = next(c for c in config if c["type"] == "layers")
    return [[name.strip() for name in row.split("|")] for row in contract["layers"]]


def modules(name: str) -> list[str]:
    folder = PACKAGE / name
    if not folder.is_dir():
        return [f"{name}.py"]
    found = sorted(p.relative_to(folder).with_suffix("").as_posix() for p in folder.rglob("*.py")
                   if p.name != "__init__.py")
    return found + (["csrc/*.c"] if (folder / "csrc").is_dir() else []) + (
        ["templates/*.ipynb"] if (folder / "templates").is_dir() else [])


def main() -> None:
    rows = layers()
    row_h, gap, width = 1.0, 0.45, 12.0
    fig_h = len(rows) * (row_h + gap) + 0.6
    fig, ax = plt.subplots(figsize=(width, fig_h))
    ax.set_xlim(0, width)
    ax.set_ylim(0, fig_h)
    ax.axis("off")
    centres = []
    for i, row in enumerate(rows):
        y = fig_h - 0.5 - (i + 1) * row_h - i * gap
        box_w = (width - 1.0 - 0.3 * (len(row) - 1)) / len(row)
        for j, name in enumerate(row):
            x = 0.5 + j * (box_w + 0.3)
            ax.add_patch(FancyBboxPatch((x, y), box_w, row_h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                        facecolor=COLOURS[i % len(COLOURS)], edgecolor="0.3"))
            ax.text(x + 0.15, y + row_h - 0.18, f"relief_nb.{name}", fontsize=11, weight="bold", va="top")
            ax.text(x + 0.15, y + row_h - 0.46, ROLES.get(name, ""), fontsize=8.5, va="top", style="italic")
            ax.text(x + 0.15, y + row_h - 0.70, ", ".join(modules(name)), fontsize=7, va="top", color="0.25")
        centres.append(y)
    for upper, lower in zip(centres, centres[1:]):
        ax.add_patch(FancyArrowPatch((width - 0.25, upper + 0.1), (width - 0.25, lower + row_h - 0.05),
                                     arrowstyle="-|>", mutation_scale=14, color="0.35"))
    ax.text(width - 0.1, fig_h - 0.3, "imports run downward only\n(import-linter, make lint)", ha="right",
            va="top", fontsize=9, color="0.35")
    ax.set_title("relief_nb: layers and modules", fontsize=13, loc="left")
    out = ROOT / "docs" / "figures" / "architecture.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
