"""A fingerprint of the method: what NNrelief keeps of a fixed probe network, identical on every CPU.

The notebooks' regression checks (nbval) compare this table, not the counts of the trained runs. A trained
run's counts depend on float32 training, whose kernels round differently on AVX2 and AVX-512 CPUs, with 1 or
16 threads: after a few epochs some scores cross a threshold and the counts move in their last digits (seen:
8975040 vs 8978877). The fingerprint avoids every such source:

* no training: the probe network's weights, biases and BatchNorm affine parameters are small integers times
  powers of two, drawn with ``torch.randint`` (integer arithmetic, the same on every CPU); the scoring batch
  is integer pixels; about one BatchNorm channel in eight has a large negative shift, so that some filters are
  silent and the dead-unit rule shows;
* the pass runs in float64, so every product and sum of a Linear score is exact (dyadic numbers far below
  2**53), and the rest (a square root, a BatchNorm division) rounds at 1e-16, eight orders of magnitude below
  the gaps between scores that the alpha rule compares;
* it still runs the whole method: scores, the alpha rule, dead units, the residual rule, backward pruning,
  with the experiment's own alphas and options, over two passes. A change to any of them (an alpha, the
  selection rule, the aggregation) changes the table, so the check still catches a real change of the method.
"""

from __future__ import annotations

import math

import pandas as pd
import torch
from torch import nn

from ..data.datasets import DATASETS
from ..models.zoo import create_model
from ..pruning.metrics import layer_table
from ..pruning.relief import ReliefConfig, relief_prune

__all__ = ["method_fingerprint", "probe_network"]

_MAGNITUDES = 1024  # integer weight magnitudes 1..1023: exact ties between whole kernels are practically absent


def _dyadic(shape: torch.Size, generator: torch.Generator, scale_log2: int, signed: bool = True) -> torch.Tensor:
    """Integers in [1, 1023] (random signs if ``signed``) times 2**-scale_log2, exactly, in float64."""
    magnitude = torch.randint(1, _MAGNITUDES, shape, generator=generator, dtype=torch.int64)
    if signed:
        magnitude = magnitude * (torch.randint(0, 2, shape, generator=generator, dtype=torch.int64) * 2 - 1)
    return magnitude.to(torch.float64) * 2.0 ** -scale_log2


@torch.no_grad()
def probe_network(model_name: str, num_classes: int, seed: int = 0) -> nn.Module:
    """``model_name`` in float64 with weights drawn from integers (see the module docstring), eval mode."""
    model = create_model(model_name, num_classes).double().eval()
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            # keep activations of order one through deep nets: a power-of-two scale (exact) near 1/(1024 sqrt(n))
            module.weight.copy_(_dyadic(module.weight.shape, g, 10 + round(math.log2(math.sqrt(fan_in)))))
            if module.bias is not None:
                module.bias.copy_(_dyadic(module.bias.shape, g, 12))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.weight.copy_(_dyadic(module.weight.shape, g, 10, signed=False))
            module.bias.copy_(_dyadic(module.bias.shape, g, 11))
            # about one channel in eight far below zero: silent after ReLU, so the dead-unit rule has work to do
            silent = torch.randint(0, 8, module.bias.shape, generator=g) == 0
            module.bias.masked_fill_(silent, -64.0)
    return model


def method_fingerprint(experiment: str, passes: int = 2, batch_size: int = 16, seed: int = 0,
                       **changes: object) -> pd.DataFrame:
    """Weights kept per layer after each of ``passes`` NNrelief passes on the probe network of ``experiment``.

    The experiment's pruning settings are its paper settings (``relief_nb.experiments.presets.EXPERIMENTS``), so the
    table does not depend on the profile a notebook runs in; ``changes`` override ReliefConfig fields (``alpha_fc=0.9``,
    ``selection="code"``) to see what a change of the method does to it. Columns: ``layer``, ``weights``
    (in the dense layer), then ``pass 1``, ``pass 2``, ... (weights remaining after that pass).
    """
    from .presets import EXPERIMENTS

    if experiment not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {experiment!r}; known experiments: {', '.join(sorted(EXPERIMENTS))}")
    cfg = EXPERIMENTS[experiment]
    spec = DATASETS[cfg.data.name]
    model = probe_network(cfg.model, spec.num_classes, seed)
    g = torch.Generator().manual_seed(seed + 1)
    batch = torch.randint(0, 256, (batch_size, *spec.input_shape), generator=g).to(torch.float64) / 256
    relief_config = ReliefConfig(**{**cfg.method.relief.to_dict(), "chunk_size": batch_size, **changes})
    columns: dict[str, list[int]] = {}
    for k in range(1, passes + 1):
        graph = relief_prune(model, batch, relief_config)
        table = layer_table(model, graph)
        columns.setdefault("layer", table.layer.astype(str).tolist())
        columns.setdefault("weights", table.weights.astype(int).tolist())
        columns[f"pass {k}"] = table.weights_remaining.astype(int).tolist()
    return pd.DataFrame({"experiment": experiment, **columns})
