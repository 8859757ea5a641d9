"""Dataclasses <-> JSON data for task results (typed results stored as plain JSON).

`to_json(obj)` turns (nested) dataclasses, tuples and numpy scalars into JSON data;
`from_json(cls, data)` rebuilds them from the field type hints (dataclasses, lists, tuples,
dicts, Optional). Torch-free.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def to_json(obj: Any) -> Any:
    """JSON data of a dataclass (recursively), list, tuple, dict or scalar."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def from_json(tp: Any, data: Any) -> Any:
    """An instance of `tp` (a dataclass or typing form) from JSON data."""
    if data is None:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return from_json(args[0], data) if len(args) == 1 else data
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: from_json(hints.get(k, Any), v) for k, v in data.items() if k in names})
    if origin in (list, typing.List):
        (arg,) = typing.get_args(tp) or (Any,)
        return [from_json(arg, v) for v in data]
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], v) for v in data)
        return tuple(from_json(a, v) for a, v in zip(args, data)) if args else tuple(data)
    if origin is dict:
        _, arg = typing.get_args(tp) or (Any, Any)
        return {k: from_json(arg, v) for k, v in data.items()}
    return data
