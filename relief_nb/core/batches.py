"""What a scoring batch may be, and the few things the pass does with one, whatever its form.

A batch is what the model's ``forward`` takes, with the examples along dim 0 of every tensor:

* a tensor: float images ``(N, C, H, W)``, sequences ``(N, C, L)``, volumes ``(N, C, D, H, W)``, features, or
  integer token ids ``(N, T)``; the model is called as ``model(batch)``;
* a tuple or list of tensors: positional arguments, ``model(*batch)``;
* a dict of tensors: keyword arguments, ``model(**batch)``.

:class:`BatchSpec` describes one example of each tensor (shape and dtype): the graph is traced for a spec, and a
batch is checked against it. A plain shape tuple is the spec of a float tensor of the model's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn

__all__ = ["Batch", "BatchSpec", "as_spec", "batch_size", "batch_tensors", "call_model", "cast_floats", "describe",
           "example_batch", "fx_args", "input_shape_of", "slice_batch", "spec_of", "to_device"]

Batch = Union[torch.Tensor, Sequence[torch.Tensor], Mapping[str, torch.Tensor]]  # noqa: UP007 (a runtime alias)


@dataclass(frozen=True)
class BatchSpec:
    """One example of a batch: ``kind`` is ``tensor``, ``args`` (tuple / list) or ``kwargs`` (dict); ``items`` is
    ``(key, shape, dtype)`` per tensor (dtype None: the model's floating dtype)."""

    kind: str
    items: tuple[tuple[str | int, tuple[int, ...], torch.dtype | None], ...]

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-example shape of the first tensor (the only one of a plain tensor batch)."""
        return self.items[0][1]

    def __str__(self) -> str:
        parts = [f"{'' if self.kind == 'tensor' else f'{k}: '}(N, {', '.join(map(str, s))})"
                 f"{'' if d is None or d.is_floating_point else f' {d}'}" for k, s, d in self.items]
        return parts[0] if self.kind == "tensor" else ("(" if self.kind == "args" else "{") + ", ".join(parts) + (
            ")" if self.kind == "args" else "}")


def _dtype(t: torch.Tensor) -> torch.dtype | None:
    return None if t.is_floating_point() else t.dtype  # floats follow the model's dtype


def spec_of(batch: Batch) -> BatchSpec:
    """The spec of a batch (raises ``TypeError`` / ``ValueError`` naming what is wrong)."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim < 1 or batch.shape[0] == 0:
            raise ValueError(f"the scoring batch must be a non-empty tensor (N, ...), got shape {tuple(batch.shape)}")
        return BatchSpec("tensor", (("", tuple(batch.shape[1:]), _dtype(batch)),))
    if isinstance(batch, Mapping):
        kind, pairs = "kwargs", list(batch.items())
    elif isinstance(batch, (tuple, list)):
        kind, pairs = "args", list(enumerate(batch))
    else:
        raise TypeError("the scoring batch must be a tensor, a tuple / list of tensors (the forward's positional "
                        f"arguments) or a dict of tensors (its keyword arguments); got {type(batch).__name__}")
    if not pairs:
        raise ValueError("the scoring batch is an empty tuple / dict")
    sizes = set()
    for key, t in pairs:
        if not isinstance(t, torch.Tensor) or t.ndim < 1:
            raise TypeError(f"element {key!r} of the scoring batch is not a tensor with a batch dim")
        sizes.add(t.shape[0])
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"the tensors of the scoring batch must share one non-zero batch size, got {sorted(sizes)}")
    return BatchSpec(kind, tuple((k, tuple(t.shape[1:]), _dtype(t)) for k, t in pairs))


def input_shape_of(batch: Batch) -> tuple[int, ...] | BatchSpec:
    """What a graph is traced for: the example shape of a float tensor batch, else the batch's full spec."""
    spec = spec_of(batch)
    return spec.shape if spec.kind == "tensor" and spec.items[0][2] is None else spec


def as_spec(input_shape: tuple[int, ...] | BatchSpec) -> BatchSpec:
    """A spec from a spec, or from a per-example shape (a float tensor)."""
    if isinstance(input_shape, BatchSpec):
        return input_shape
    return BatchSpec("tensor", (("", tuple(int(d) for d in input_shape), None),))


def batch_tensors(batch: Batch) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    return list(batch.values()) if isinstance(batch, Mapping) else list(batch)


def batch_size(batch: Batch) -> int:
    return batch_tensors(batch)[0].shape[0]


def _map(batch: Batch, fn) -> Batch:
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {k: fn(v) for k, v in batch.items()}
    return type(batch)(fn(v) for v in batch) if isinstance(batch, tuple) else [fn(v) for v in batch]


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return _map(batch, lambda t: t[start:stop])


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    return _map(batch, lambda t: t.to(device))


def cast_floats(batch: Batch, dtype: torch.dtype) -> Batch:
    """The batch with its floating tensors in ``dtype`` (token ids untouched)."""
    return _map(batch, lambda t: t.to(dtype) if t.is_floating_point() else t)


def call_model(model: nn.Module, batch: Batch) -> Any:
    """``model(batch)``, ``model(*batch)`` or ``model(**batch)`` by the batch's form."""
    if isinstance(batch, torch.Tensor):
        return model(batch)
    return model(**batch) if isinstance(batch, Mapping) else model(*batch)


def fx_args(batch: Batch, placeholders: list) -> list:
    """The batch as the positional inputs of a traced graph's placeholders (a dict matched by argument name; an
    argument the batch does not give takes its default)."""
    if isinstance(batch, torch.Tensor):
        given = [batch]
    elif isinstance(batch, Mapping):
        missing = [p.target for p in placeholders if p.target not in batch and not p.args]
        if missing or set(batch) - {p.target for p in placeholders}:
            raise ValueError(f"the scoring batch's keys {sorted(batch)} do not match the forward's arguments "
                             f"{[p.target for p in placeholders]}")
        return [batch[p.target] if p.target in batch else p.args[0] for p in placeholders]
    else:
        given = list(batch)
    if len(given) > len(placeholders):
        raise ValueError(f"the scoring batch gives {len(given)} inputs but the forward takes {len(placeholders)}")
    return given + [p.args[0] if p.args else None for p in placeholders[len(given):]]


def example_batch(spec: BatchSpec, n: int, dtype: torch.dtype, device: torch.device | str | None = None,
                  generator: torch.Generator | None = None, high: int = 1) -> Batch:
    """``n`` examples of ``spec``: zeros, or with ``generator`` standard normal floats and integers in
    ``[0, high)``."""
    def make(shape: tuple[int, ...], dt: torch.dtype | None) -> torch.Tensor:
        dt = dt or dtype
        if generator is None:
            t = torch.zeros(n, *shape, dtype=dt)
        elif dt.is_floating_point:
            t = torch.randn(n, *shape, generator=generator).to(dt)
        elif dt == torch.bool:
            t = torch.randint(0, 2, (n, *shape), generator=generator).bool()
        else:
            t = torch.randint(0, max(high, 1), (n, *shape), generator=generator).to(dt)
        return t.to(device) if device is not None else t

    made = [(k, make(s, d)) for k, s, d in spec.items]
    if spec.kind == "tensor":
        return made[0][1]
    return dict(made) if spec.kind == "kwargs" else tuple(t for _, t in made)


def describe(batch: Batch) -> str:
    try:
        return str(spec_of(batch))
    except (TypeError, ValueError):
        return type(batch).__name__
