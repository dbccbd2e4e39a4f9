"""Checks of user input that fail early, in one line that names the setting and shows a valid example."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["expect"]

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "True or False", type(None): "None"}


def expect(name: str, value: Any, types: tuple[type, ...], condition: Callable[[Any], bool] | None = None,
           requirement: str = "", example: str = "") -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``types`` (a bool is no number) and meets ``condition``."""
    is_bool = isinstance(value, bool)
    ok_type = isinstance(value, types) and (not is_bool or bool in types)
    if ok_type and not (is_bool and bool not in types) and (condition is None or value is None or condition(value)):
        return
    wanted = requirement or " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
    hint = f"; for example {name}={example}" if example else ""
    raise ValueError(f"{name} must be {wanted}, got {value!r}{hint}")
