"""A CPU stand-in for a GPU: catches tensors that would sit on the wrong device, without a GPU.

On a CPU every tensor is on the same device, so a tensor the pass creates on the CPU and mixes with the model's
(a bug that crashes only on CUDA) goes unnoticed. :class:`DeviceGuard` is a ``TorchFunctionMode`` that tags the
tensors that would be on *the device*: the model's parameters and buffers and the batch, and everything computed
from them, or created with ``device=`` a device read from one of them (``t.device``, which reads as the
``meta`` device so that code paths meant for the CPU only are not taken), or moved there with ``.to(t)`` /
``.to(t.device)``. A tensor created without such a device (``torch.zeros(n)``), or moved with
``.cpu()``, is a CPU tensor. An operation that mixes a tagged tensor with an untagged one of one or more dims
(0-dim CPU tensors mix with CUDA ones in torch) is a violation: it would raise "Expected all tensors to be on the
same device" on CUDA (indexing a device tensor with CPU indices is allowed, as torch allows it).
Violations are recorded with the operation and the relief_nb source line that called it.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

_DEVICE = torch.Tensor.device  # the property; reading it dispatches its __get__ to the mode
_DATA = torch.Tensor.data
_SELF_ONLY = {torch.Tensor.__getitem__, torch.Tensor.__deepcopy__}
_MOVES_TO_HOST = {torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.tolist, torch.Tensor.item}


_SENTINEL = torch.device("meta")  # what a device tensor's ``.device`` reads as: not "cpu", so CPU-only paths are off


def _is_sentinel(d) -> bool:
    return (isinstance(d, torch.device) and d.type == "meta") or d == "meta"


class DeviceGuard(TorchFunctionMode):
    def __init__(self, *roots: torch.Tensor | torch.nn.Module | Iterable) -> None:
        super().__init__()
        self._tagged: dict[int, torch.Tensor] = {}  # id -> tensor (kept alive while the guard lives)
        self.violations: list[str] = []
        for root in roots:
            self.tag(root)

    def tag(self, obj) -> None:
        if isinstance(obj, torch.nn.Module):
            for t in [*obj.parameters(), *obj.buffers()]:
                self._tagged[id(t)] = t
        elif isinstance(obj, torch.Tensor):
            self._tagged[id(obj)] = obj
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                self.tag(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                self.tag(o)

    def __enter__(self):
        # a Parameter's deep copy is built by Tensor._make_subclass, which torch function modes do not see
        original = self._parameter_deepcopy = torch.nn.Parameter.__deepcopy__
        guard = self

        def deepcopy(param, memo):
            copy = original(param, memo)
            if guard.on_device(param):
                guard._tagged[id(copy)] = copy
            return copy
        # and nn.Parameter(data) by the same call: the parameter lives where its data does
        new = self._parameter_new = torch.nn.Parameter.__new__

        def parameter(cls, data=None, requires_grad=True):
            param = new(cls, data, requires_grad)
            if data is not None and guard.on_device(data):
                guard._tagged[id(param)] = param
            return param
        torch.nn.Parameter.__deepcopy__ = deepcopy
        torch.nn.Parameter.__new__ = parameter
        return super().__enter__()

    def __exit__(self, *exc):
        torch.nn.Parameter.__deepcopy__ = self._parameter_deepcopy
        torch.nn.Parameter.__new__ = self._parameter_new
        return super().__exit__(*exc)

    def on_device(self, t: torch.Tensor) -> bool:
        return self._tagged.get(id(t)) is t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if getattr(func, "__self__", None) is _DEVICE:
            real = func(*args, **kwargs)
            return _SENTINEL if args and isinstance(args[0], torch.Tensor) and self.on_device(args[0]) else real
        if func is torch._has_compatible_shallow_copy_type:  # Module.to's check before swapping .data
            return func(*args, **kwargs)
        if getattr(func, "__self__", None) is _DATA and getattr(func, "__name__", "") == "__set__":
            out = func(*args, **kwargs)  # param.data = moved: the parameter now lives where the data does
            if self.on_device(args[1]):
                self._tagged[id(args[0])] = args[0]
            else:
                self._tagged.pop(id(args[0]), None)
            return out
        to_device = False  # a factory or a move to a device read from a device tensor
        if _is_sentinel(kwargs.get("device")):
            kwargs["device"], to_device = torch.device("cpu"), True
        if func is torch.Tensor.to and len(args) > 1 and _is_sentinel(args[1]):
            args, to_device = (args[0], torch.device("cpu"), *args[2:]), True
        out = func(*args, **kwargs)
        # what decides: a device tensor indexed with CPU indices stays one (torch allows it); a deep copy is a copy
        operands = (args[:1], kwargs) if func in _SELF_ONLY else (args, kwargs)
        tensors = [t for t in tree_flatten(operands)[0] if isinstance(t, torch.Tensor)]
        tagged = [t for t in tensors if self.on_device(t)]
        if func in _MOVES_TO_HOST:
            return self._host_copy(out, args)
        if func is torch.Tensor.to:
            moved_to = args[1] if len(args) > 1 and isinstance(args[1], (torch.Tensor, torch.device, str)) \
                else kwargs.get("device")
            if isinstance(moved_to, torch.Tensor):
                follow = self.on_device(moved_to)
            elif moved_to is not None and not to_device:
                return self._host_copy(out, args)  # .to("cpu") or .to(torch.device("cpu"))
            else:
                follow = to_device or self.on_device(args[0])
                if to_device and out is args[0] and not self.on_device(out):
                    out = out.view_as(out)  # on CUDA a move is a new tensor; the CPU one stays where it was
        else:
            untagged = [t for t in tensors if not self.on_device(t) and t.ndim > 0]
            if tagged and untagged:
                self._report(func, tagged, untagged)
            follow = bool(tagged) or to_device
        if follow:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._tagged[id(t)] = t
        return out

    def _host_copy(self, out, args):
        """On the CPU a move to the host returns the tensor itself; on CUDA it is a new tensor, off the device."""
        if isinstance(out, torch.Tensor) and args and out is args[0] and self.on_device(out):
            return out.view_as(out)
        return out

    def _report(self, func, tagged, untagged) -> None:
        frames = [f for f in traceback.extract_stack()[:-2]
                  if "relief_nb" in f.filename and "/tests/" not in f.filename]
        where = f"{frames[-1].filename.split('relief_nb/')[-1]}:{frames[-1].lineno} ({frames[-1].line})" if frames \
            else "outside relief_nb"
        name = getattr(func, "__qualname__", getattr(func, "__name__", str(func)))
        self.violations.append(f"{name} mixes device tensors {[tuple(t.shape) for t in tagged]} with CPU tensors "
                               f"{[tuple(t.shape) for t in untagged]} at {where}")
