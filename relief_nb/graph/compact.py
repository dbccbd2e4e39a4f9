"""Compact retraining: train a physically smaller copy of a pruned model, then write its weights back.

Every NNrelief step removes whole units (a unit that loses all its incoming connections, or that nothing reads),
yet the masked model still computes them: a LeNet-5 at 108x keeps 8 of 20 conv1 filters and 110 of 500 fc1
neurons. :class:`CompactModel` slices the removed units away with the exporter's plan
(:func:`relief_nb.graph.export.plan_slices`), but unlike the export it keeps everything training needs: the prune masks
inside the kept units (so pruned connections stay at zero), BatchNorm as BatchNorm (not folded), and the
parameter names of the full model. Training it is the same computation as training the masked model:

* a removed unit emits exactly zero in the masked model and is read by nobody, so the kept units see the same
  inputs, outputs, losses and gradients (up to float summation order);
* Adam, SGD with momentum and coupled weight decay act element by element, so their state on the kept
  entries is the same, and :meth:`CompactModel.optimizer_state_to_full` / ``_from_full`` move it between the
  two layouts (the run's checkpoint always holds the full layout: resume works with compaction on or off);
* :meth:`CompactModel.write_back` copies the trained kept entries into the full model. The removed entries stay
  as they were, which the masks make irrelevant to the function. (Masked training would have let coupled
  weight decay shrink them; rewinding resets them anyway.)

Not identical: with dropout, the compact model draws its dropout masks over fewer units, so the random stream
differs (the same distribution of training, not the same numbers).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..core.masks import raw_weight, refresh_weights
from ..core.modes import eval_mode
from ..core.units import resize, unit_major
from .export import (
    NORM_TENSORS,
    ExportError,
    _check_against,
    _set_submodule,
    plan_slices,
    resize_channelwise,
    slice_module,
    take,
    weight_index,
)
from .structure import PruningGraph

__all__ = ["CompactModel"]

Index = tuple[torch.Tensor, torch.Tensor | None]


class CompactModel:
    """A smaller trainable copy of ``full`` (a pruned model) and the way back (see the module docstring).

    Raises :class:`~relief_nb.graph.export.ExportError` if the copy's outputs differ from the masked model's on a probe
    batch (a forward that hard-codes a channel count, say): the caller then trains the masked model instead.
    """

    def __init__(self, full: nn.Module, graph: PruningGraph, multiple: int = 1) -> None:
        self.full = full
        plan = plan_slices(full, graph, multiple)
        with torch.no_grad():  # masked weights recomputed outside autograd: deepcopy needs leaf tensors
            refresh_weights(full)
        compact = copy.deepcopy(full)
        self.index: dict[str, Index] = {}  # state_dict key -> kept positions along dims 0 and 1
        for path, (out_idx, in_idx, groups) in plan.layers.items():
            m = compact.get_submodule(path)
            self._slice(m, path, {"weight": weight_index(m, out_idx, in_idx), "bias": (out_idx, None)})
            resize(m, len(out_idx), unit_major(m, raw_weight(m)).shape[1], groups)
        for path, idx in plan.norms.items():
            m = compact.get_submodule(path)
            self._slice(m, path, dict.fromkeys(NORM_TENSORS, (idx, None)))
            resize_channelwise(m, len(idx))
        for path, idx in plan.scales.items():  # layer scale: one parameter value per kept channel
            owner_path, _, name = path.rpartition(".")
            self._slice(compact.get_submodule(owner_path), owner_path, {name: (idx, None)})
        for (path, buffer), idx in plan.gates.items():
            owner = compact.get_submodule(path)
            owner.register_buffer(buffer, take(getattr(owner, buffer), idx))
            self.index[f"{path}.{buffer}" if path else buffer] = (idx, None)
        device = next(full.parameters()).device
        self._replaced = tuple(plan.shortcuts)  # option-A shortcuts become IndexShortcuts: nothing to write back
        for path, shortcut in plan.shortcuts.items():
            _set_submodule(compact, path, shortcut.to(device))
        with torch.no_grad():
            refresh_weights(compact)
        if _is_channels_last(full):
            compact = compact.to(memory_format=torch.channels_last)
        self.model = compact
        self.names = [n for n, p in full.named_parameters() if p.requires_grad]
        compact_names = [n for n, p in compact.named_parameters() if p.requires_grad]
        if set(compact_names) != set(self.names):
            raise ExportError("the compact copy's parameters differ from the model's")
        self._compact_names = compact_names

    def _slice(self, m: nn.Module, path: str, index: dict[str, Index]) -> None:
        """Slice ``m``'s tensors named in ``index`` (with their ``_orig`` / ``_mask``), recording the index."""
        for name in slice_module(m, index):
            self.index[f"{path}.{name}" if path else name] = index[name.removesuffix("_orig").removesuffix("_mask")]

    def check(self, input_shape: tuple[int, ...], probe: torch.Tensor | None = None) -> None:
        """Raise :class:`ExportError` unless the copy computes what the masked model computes (eval mode)."""
        with eval_mode(self.model):  # the copy is in the full model's mode, which may be train
            _check_against(self.full, self.model, input_shape, probe)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the compact model's parameters and buffers into the kept positions of the full model."""
        full = self.full.state_dict()
        for key, value in self.model.state_dict().items():
            if any(key.startswith(path + ".") for path in self._replaced):
                continue
            idx = self.index.get(key)
            if idx is None:
                full[key].copy_(value)
            else:
                _put(full[key], idx, value)
        refresh_weights(self.full)

    def _convert(self, state: dict, src_names: list[str], dst_names: list[str], to_full: bool) -> dict:
        full_params = dict(self.full.named_parameters())
        position = {name: i for i, name in enumerate(src_names)}
        out_state: dict[int, dict[str, Any]] = {}
        for j, name in enumerate(dst_names):
            entry = state["state"].get(position[name])
            if entry is None:
                continue
            idx = self.index.get(name)
            converted = {}
            for k, v in entry.items():
                if not isinstance(v, torch.Tensor) or v.ndim == 0 or idx is None:
                    converted[k] = v.clone() if isinstance(v, torch.Tensor) else v
                elif to_full:
                    whole = torch.zeros_like(full_params[name], dtype=v.dtype, memory_format=torch.preserve_format)
                    _put(whole, idx, v)
                    converted[k] = whole
                else:
                    converted[k] = take(v, *idx)
            out_state[j] = converted
        groups = copy.deepcopy(state["param_groups"])
        if len(groups) != 1:
            raise ExportError("compact retraining supports optimizers with one parameter group")
        groups[0]["params"] = list(range(len(dst_names)))
        return {"state": out_state, "param_groups": groups}

    def optimizer_state_to_full(self, state: dict) -> dict:
        """The compact optimizer's ``state_dict()`` in the full model's layout (zeros at removed entries)."""
        return self._convert(state, self._compact_names, self.names, to_full=True)

    def optimizer_state_from_full(self, state: dict) -> dict:
        """A full-model optimizer ``state_dict()`` for the compact model's optimizer."""
        return self._convert(state, self.names, self._compact_names, to_full=False)

    def parameter_fraction(self) -> float:
        """Parameters of the compact copy over those of the full model (masked entries included in both)."""
        count = sum(p.numel() for p in self.model.parameters())
        return count / max(sum(p.numel() for p in self.full.parameters()), 1)


def _put(target: torch.Tensor, idx: Index, value: torch.Tensor) -> None:
    """The inverse of :func:`~relief_nb.graph.export.take`: ``target[idx[0]][:, idx[1]] = value``, in place."""
    rows = idx[0].to(target.device)
    if idx[1] is None or target.ndim == 1:
        target[rows] = value.to(target.dtype)
    else:
        target[rows.view(-1, 1), idx[1].to(target.device)] = value.to(target.dtype)


def _is_channels_last(model: nn.Module) -> bool:
    return any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in model.parameters())
