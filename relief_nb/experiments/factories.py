"""Models of your own: a factory named ``"package.module:function"`` or passed as a callable, called with the
keywords it declares, and identified by what it builds."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable

import torch

from ..data.userdata import hash_tensor

__all__ = ["ModelFactory", "call_factory", "resolve_factory", "weights_fingerprint"]

ModelFactory = Callable[..., torch.nn.Module]


def resolve_factory(spec: str) -> ModelFactory:
    """``"package.module:function"`` -> the function (imported), with errors that say what to fix."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"a model factory is written 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import {module_name!r} for model {spec!r} ({err}); is it on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{module_name} has no callable {attr!r} (model {spec!r})")
    return factory


def call_factory(factory: ModelFactory, num_classes: int, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """Call a model factory with the keywords it declares among ``num_classes``, ``input_shape`` and
    ``in_channels`` (so ``make_net()``, ``make_net(num_classes)`` and ``make_net(**everything)`` all work)."""
    offered = {"num_classes": num_classes, "input_shape": input_shape, "in_channels": input_shape[0]}
    params = inspect.signature(factory).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    model = factory(**{k: v for k, v in offered.items() if takes_all or k in params})
    if not isinstance(model, torch.nn.Module):  # a usage error (exit 2 from the CLI), named in one line
        raise ValueError(f"the model factory {getattr(factory, '__qualname__', factory)!r} returned "
                         f"{type(model).__name__}, not a torch.nn.Module")
    return model


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha1 of a model's architecture and initial state (a factory of your own is identified by what it builds)."""
    h = hashlib.sha1(repr(model).encode())
    for key, value in model.state_dict().items():
        hash_tensor(h, value, key)
    return h.hexdigest()[:16]
