"""A model's output, whatever its form: a tensor, or tuples, lists, dicts and dataclasses of tensors (as
torchvision's and timm's models, and detection or multi-head models, return them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch

__all__ = ["output_tensors"]


def output_tensors(out: Any) -> Iterator[torch.Tensor]:
    """Every tensor in ``out``, depth first, in a fixed order (dict keys in insertion order)."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, Mapping):
        for value in out.values():
            yield from output_tensors(value)
    elif isinstance(out, (tuple, list)):
        for value in out:
            yield from output_tensors(value)
    elif dataclasses.is_dataclass(out) and not isinstance(out, type):
        for f in dataclasses.fields(out):
            yield from output_tensors(getattr(out, f.name))
