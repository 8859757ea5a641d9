"""Task definitions: pure data with a content-hash key, and the kind -> function registry.

A Task is what to compute (kind + JSON params), never how or where. Its key hashes everything
that determines the result (model weights fingerprint, layer, unit, technique, recipe, seed...),
so equal keys mean reusable results. This module imports no torch.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

#: Bump to invalidate every cached result (e.g. when the result layout changes).
CACHE_VERSION = 1


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, tuples as lists); TypeError on non-JSON data."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=_reject)


def _reject(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars/arrays: record the numbers, not the object
        return obj.tolist()
    raise TypeError(f"task params must be JSON data, got {type(obj).__name__}: {obj!r}")


def content_hash(*parts: Any, length: int = 32) -> str:
    """Hex digest of the canonical JSON of `parts`."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:length]


@dataclass(frozen=True, eq=False)
class Task:
    """One unit of work: `kind` names a registered function, `params` are JSON data.

    Equality and hashing go by `key`; params are normalized (tuples -> lists) at creation so
    the key does not depend on how the caller spelled them.
    """

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.kind or not isinstance(self.kind, str):
            raise ValueError("task kind must be a non-empty string")
        text = canonical_json(dict(self.params))
        object.__setattr__(self, "params", json.loads(text))
        object.__setattr__(self, "_key", content_hash(CACHE_VERSION, self.kind, self.params))

    @property
    def key(self) -> str:
        """32 hex digits; stable across processes and Python versions."""
        return self._key  # type: ignore[attr-defined]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __getitem__(self, name: str) -> Any:
        return self.params[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)

    def describe(self) -> str:
        bits = [f"{k}={v}" for k, v in self.params.items() if k != "model" and not isinstance(v, (dict, list))]
        return f"{self.kind}({', '.join(bits)})"


def make_task(kind: str, **params: Any) -> Task:
    """Shorthand: make_task("render_unit", model=fp, layer="blocks.4", unit=3, seed=0, recipe={...})."""
    return Task(kind, params)


# ------------------------------------------------------------------------------ registry

#: kind -> "module:qualname" (strings, so pool workers can import the function themselves)
_REGISTRY: dict[str, str] = {}
_FUNCS: dict[str, Callable] = {}


def register_task(kind: str, func: Callable | None = None):
    """Register `func(task, ctx) -> dict | None` for `kind`; usable as a decorator.

    The function must be importable at module level (pool workers import it by name). It writes
    its files into `ctx.out_dir` and returns JSON metadata, stored with the result.
    """
    def deco(fn: Callable) -> Callable:
        if "<locals>" in fn.__qualname__ or fn.__name__ == "<lambda>":
            raise ValueError(f"task function for {kind!r} must be a module-level function")
        _REGISTRY[kind] = f"{fn.__module__}:{fn.__qualname__}"
        _FUNCS[kind] = fn
        return fn
    return deco(func) if func is not None else deco


def task_function(kind: str) -> Callable:
    """The function registered for `kind` (imported by name if this process has not seen it)."""
    if kind in _FUNCS:
        return _FUNCS[kind]
    if kind not in _REGISTRY:
        raise KeyError(f"no task function registered for kind {kind!r} (known: {', '.join(sorted(_REGISTRY))})")
    module, _, qualname = _REGISTRY[kind].partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    _FUNCS[kind] = obj
    return obj


def registry_snapshot() -> dict[str, str]:
    """kind -> 'module:qualname', to hand to worker processes."""
    return dict(_REGISTRY)


def install_registry(snapshot: Mapping[str, str]) -> None:
    """Make a snapshot's kinds known in this process (worker start-up)."""
    for kind, ref in snapshot.items():
        if _REGISTRY.get(kind) != ref:
            _REGISTRY[kind] = ref
            _FUNCS.pop(kind, None)
