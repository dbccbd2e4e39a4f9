"""An interactive alpha explorer for notebooks: one NNrelief pass at each of several alphas on a copy of a trained
model, the connections every layer keeps and the accuracy left on an evaluation batch; a slider in JupyterLab,
a static figure when the notebook runs headless (papermill, nbval)."""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..experiments.presets import FAST_ENV
from ..pruning.metrics import layer_table
from ..pruning.relief import ReliefConfig, ReliefWarning, relief_prune
from ..reporting.plots import plot_alpha_effect
from .session import PROGRESS_ENV

__all__ = ["AlphaExplorer", "headless"]

DEFAULT_ALPHAS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 1.0)


def headless() -> bool:
    """Whether this kernel runs without a person at it: under ``relief-nb notebook`` (plain progress lines) or the
    fast path of the tests (nbval). A notebook opened in JupyterLab is neither."""
    return os.environ.get(PROGRESS_ENV) == "text" or os.environ.get(FAST_ENV, "") not in ("", "0")


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return 100 * float((model(x).argmax(1) == y).float().mean())


class AlphaExplorer:
    """One pass per alpha (both alphas set to it), each on a fresh copy of ``model``, scored on ``batch``;
    ``effect`` holds one row per alpha and layer: connections kept (and %), units alive, and the accuracy on
    ``(eval_x, eval_y)`` before any retraining. All passes run here, once: the slider only redraws."""

    def __init__(self, model: nn.Module, batch: torch.Tensor, eval_x: torch.Tensor, eval_y: torch.Tensor,
                 alphas: Sequence[float] = DEFAULT_ALPHAS, network: str | None = None, mark: str | None = None):
        self.alphas, self.network, self.mark = [float(a) for a in alphas], network, mark
        model = copy.deepcopy(model).eval()
        dense = _accuracy(model, eval_x, eval_y)
        rows = []
        for alpha in self.alphas:
            pruned = copy.deepcopy(model)
            with warnings.catch_warnings():  # low alphas remove most weights on purpose: that is what is shown
                warnings.simplefilter("ignore", ReliefWarning)
                graph = relief_prune(pruned, batch, ReliefConfig(alpha_conv=alpha, alpha_fc=alpha))
            accuracy = _accuracy(pruned.eval(), eval_x, eval_y)
            for r in layer_table(pruned, graph).itertuples():
                if r.weights:
                    rows.append({"alpha": alpha, "layer": r.layer, "kept": int(r.weights_remaining),
                                 "weights": int(r.weights), "kept_pct": 100 * r.weights_remaining / r.weights,
                                 "alive_units": r.alive_units, "units": r.units, "accuracy_pct": accuracy,
                                 "dense_accuracy_pct": dense})
        self.effect = pd.DataFrame(rows)

    def figure(self, alpha: float | None = None):
        """The static form: every alpha at once (``alpha`` highlighted)."""
        return plot_alpha_effect(self.effect, alpha, self.network, self.mark)

    def table(self, alpha: float) -> pd.DataFrame:
        """Per layer at ``alpha``: connections and units kept."""
        df = self.effect[self.effect.alpha == alpha]
        return df[["layer", "kept", "weights", "kept_pct", "alive_units", "units"]].round(2).reset_index(drop=True)

    def show(self, alpha: float = 0.95) -> Any:
        """A slider over the alphas redrawing the figure and the per-layer table (``ipywidgets``); None when the
        notebook runs headless, where :meth:`figure` is the explorer's form."""
        if headless():
            return None
        import ipywidgets as widgets
        import matplotlib.pyplot as plt
        from IPython.display import display

        start = min(self.alphas, key=lambda a: abs(a - alpha))
        slider = widgets.SelectionSlider(options=[(f"{a:g}", a) for a in self.alphas], value=start,
                                         description="alpha", continuous_update=False)
        out = widgets.Output()

        def draw(_change: Any = None) -> None:
            with out:
                out.clear_output(wait=True)
                fig = self.figure(slider.value)
                display(fig, self.table(slider.value))
                plt.close(fig)

        slider.observe(draw, names="value")
        draw()
        return widgets.VBox([slider, out])
