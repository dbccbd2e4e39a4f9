"""Evaluation mode for a while: the one place that switches a model to ``eval()`` and back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["eval_mode"]


@contextlib.contextmanager
def eval_mode(model: nn.Module, no_grad: bool = True) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode (and, unless ``no_grad=False``, under ``torch.no_grad``).

    On exit, normal or by an exception, every submodule gets back its own previous ``training`` flag, so a model
    with some submodules deliberately frozen in eval mode comes back exactly as it was.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield model
    finally:
        for module, training in flags:
            module.training = training
