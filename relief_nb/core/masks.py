"""Masks held the ``torch.nn.utils.prune`` way: ``weight_orig`` + ``weight_mask`` and a forward pre-hook.

This module is the one place that knows that layout: :func:`raw_weight` is a parameter before masking (``<name>_orig``
of a pruned module, the parameter itself otherwise), :func:`effective` the parameter as the forward sees it,
:func:`current_mask` / :func:`kept_count` its mask.

A pruned model therefore interoperates with the PyTorch ecosystem: :func:`make_permanent` is
``prune.remove``, and :func:`load_pruned_state_dict` loads a pruned state_dict into a fresh model of the same
architecture. Masks only shrink: :func:`shrink_mask` multiplies the new mask into the existing one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = [
    "current_mask",
    "effective",
    "is_pruned",
    "kept_count",
    "load_pruned_state_dict",
    "make_permanent",
    "mask_snapshot",
    "masked_parameters",
    "raw_weight",
    "refresh_weights",
    "restore_masks",
    "shrink_mask",
]


def is_pruned(module: nn.Module, name: str = "weight") -> bool:
    return hasattr(module, f"{name}_mask")


def raw_weight(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The parameter before masking: ``<name>_orig`` of a pruned module, else the parameter itself (None if the
    module has no such parameter)."""
    orig = getattr(module, f"{name}_orig", None)
    return orig if orig is not None else getattr(module, name, None)


def effective(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """The parameter as the forward sees it (``orig * mask`` for a pruned one), or None if absent."""
    if hasattr(module, f"{name}_orig"):
        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")
    return getattr(module, name, None)


def kept_count(module: nn.Module, name: str = "weight") -> tuple[int, int]:
    """``(entries, entries its mask keeps)`` of the parameter: all of them if never pruned; ``(0, 0)`` if absent."""
    p = raw_weight(module, name)
    if p is None:
        return 0, 0
    if not is_pruned(module, name):
        return p.numel(), p.numel()
    return p.numel(), int((getattr(module, f"{name}_mask") != 0).sum())  # ~5x faster than count_nonzero on CPU


def current_mask(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The module's mask for ``name`` (all ones if it was never pruned)."""
    if is_pruned(module, name):
        return getattr(module, f"{name}_mask")
    return torch.ones_like(getattr(module, name))


def shrink_mask(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """AND ``keep`` into the module's mask for ``name``, installing prune's reparametrisation if needed."""
    keep = keep.to(device=getattr(module, name).device)
    if not is_pruned(module, name):
        _install(module, name, keep)
        return
    mask = getattr(module, f"{name}_mask")
    mask.mul_(keep.to(mask.dtype))
    _refresh(module, name)


class LayoutKeepingMask(prune.CustomFromMask):
    """``prune.custom_from_mask`` whose masked weight keeps the strides of ``<name>_orig``.

    ``orig * mask`` may get other strides for size-1 dims: a 1-channel conv's channels-last weight (20, 1, 5, 5)
    then looks NCHW, the conv leaves channels-last and LeNet-5's forward gets 1.6x slower. The memory order is the
    same, so a strided view restores the strides at no cost.
    """

    def apply_mask(self, module: nn.Module) -> torch.Tensor:
        return _with_strides_of(super().apply_mask(module), getattr(module, f"{self._tensor_name}_orig"))


def _with_strides_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if t.stride() == like.stride() or any(a != b for a, b, n in zip(t.stride(), like.stride(), t.shape) if n > 1):
        return t  # the same strides, or a different memory order that a view cannot fix
    return t.as_strided(like.shape, like.stride())


def _install(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """prune's reparametrisation, with the layout-keeping hook."""
    LayoutKeepingMask.apply(module, name, mask=keep)


def _refresh(module: nn.Module, name: str) -> None:
    """Set the visible tensor now, as the pre-hook would at the next forward."""
    orig = getattr(module, f"{name}_orig")
    setattr(module, name, _with_strides_of(orig * getattr(module, f"{name}_mask"), orig))


def masked_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Module, str]]:
    """Yield ``(module_path, module, param_name)`` for every masked parameter of ``model``."""
    for path, module in model.named_modules():
        for name, _ in list(module.named_buffers(recurse=False)):
            if name.endswith("_mask") and hasattr(module, name[: -len("_mask")] + "_orig"):
                yield path, module, name[: -len("_mask")]


def refresh_weights(model: nn.Module) -> None:
    """Set the visible tensor of every masked parameter now (``orig * mask``), as the pre-hooks would at the next
    forward (under ``torch.no_grad`` it is a leaf tensor, as ``copy.deepcopy`` needs)."""
    for _, module, name in masked_parameters(model):
        _refresh(module, name)


def mask_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every mask (prune masks and ResidualBlock shortcut masks), keyed by state_dict name."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith("_mask")}


def restore_masks(model: nn.Module, snapshot: Mapping[str, torch.Tensor]) -> None:
    """Undo mask changes made after ``snapshot``: masks installed since become all ones, others reset."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith("_mask") and key not in snapshot:
                value.fill_(1)  # a mask installed since the snapshot: all ones is the unpruned state
        for key, value in snapshot.items():
            state[key].copy_(value)
    refresh_weights(model)


def make_permanent(model: nn.Module) -> nn.Module:
    """``prune.remove`` on every masked parameter: zeros become plain zeros in ``weight``."""
    for _, module, name in list(masked_parameters(model)):
        prune.remove(module, name)
    return model


def load_pruned_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Load a (possibly pruned) state_dict into ``model``, installing the masks it names first."""
    modules = dict(model.named_modules())
    for key in state_dict:
        if not key.endswith("_orig"):
            continue
        path, _, pname = key[: -len("_orig")].rpartition(".")
        module = modules.get(path)
        if module is None:
            raise KeyError(f"state_dict names {key!r} but the model has no module {path!r}")
        if not is_pruned(module, pname):
            _install(module, pname, torch.ones_like(raw_weight(module, pname)))
    model.load_state_dict(state_dict, strict=strict)
    refresh_weights(model)
