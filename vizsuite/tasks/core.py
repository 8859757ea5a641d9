"""Task definitions: pure data with a content-hash key, and the kind -> function registry.

A Task is what to compute (kind + JSON params), never how or where. Its key hashes everything
that determines the result (model weights fingerprint, layer, unit, technique, recipe, seed...),
so equal keys mean reusable results. This module imports no torch.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..hashing import canonical_json, content_hash

#: Bump to invalidate every cached result (e.g. when the result layout changes).
CACHE_VERSION = 1


@dataclass(frozen=True, eq=False)
class Task:
    """One unit of work: `kind` names a registered function, `params` are JSON data, `inputs`
    names other tasks whose results it reads (`ctx.input(name)`).

    Equality and hashing go by `key`, which covers the params and the inputs' keys; params are
    normalized (tuples -> lists) at creation so the key does not depend on how the caller
    spelled them.
    """

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, "Task"] = field(default_factory=dict)

    def __post_init__(self):
        if not self.kind or not isinstance(self.kind, str):
            raise ValueError("task kind must be a non-empty string")
        text = canonical_json(dict(self.params))
        object.__setattr__(self, "params", json.loads(text))
        object.__setattr__(self, "inputs", dict(self.inputs))
        deps = {name: t.key for name, t in sorted(self.inputs.items())}
        # a task without inputs keeps the key it always had (stored results stay valid)
        parts = (CACHE_VERSION, self.kind, self.params) + ((deps,) if deps else ())
        object.__setattr__(self, "_key", content_hash(*parts))

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


def make_task(kind: str, inputs: Mapping[str, Task] | None = None, **params: Any) -> Task:
    """Shorthand: make_task("render_unit", model=fp, layer="blocks.4", unit=3, seed=0, recipe={...});
    `inputs={"graph": other_task}` makes the task wait for (and read) other tasks' results."""
    return Task(kind, params, inputs or {})


# ------------------------------------------------------------------------------ registry

#: kind -> "module:qualname" (strings, so pool workers can import the function themselves)
_REGISTRY: dict[str, str] = {}
_FUNCS: dict[str, Callable] = {}
#: kind -> (max batch size, params that must be equal within a batch); absent = unbatched
_BATCH: dict[str, tuple[int, tuple[str, ...]]] = {}
#: kind -> "module:qualname" of the dataclass its results decode to (TaskResult.value)
_RESULTS: dict[str, str] = {}


def register_task(kind: str, func: Callable | None = None, *, batch: int = 0,
                  batch_by: tuple[str, ...] = (), result: type | None = None):
    """Register `func(task, ctx) -> dict | None` for `kind`; usable as a decorator.

    The function must be importable at module level (pool workers import it by name). It writes
    its files into `ctx.out_dir` and returns JSON metadata, stored with the result.

    With `batch=N` the function is batched instead: `func(tasks, ctxs) -> [meta, ...]` receives
    up to N tasks whose `batch_by` params are equal (e.g. same layer and recipe), so K units
    render in one forward pass. Each task still has its own key, folder and done marker, so
    reuse and resume stay per task; only the compute is shared.

    `result`: the dataclass the function returns (stored as JSON, decoded by TaskResult.value),
    so what crosses module boundaries is typed, not a string-keyed dict.
    """
    def deco(fn: Callable) -> Callable:
        if "<locals>" in fn.__qualname__ or fn.__name__ == "<lambda>":
            raise ValueError(f"task function for {kind!r} must be a module-level function")
        _REGISTRY[kind] = f"{fn.__module__}:{fn.__qualname__}"
        _FUNCS[kind] = fn
        if result is not None:
            _RESULTS[kind] = f"{result.__module__}:{result.__qualname__}"
        if batch > 0:
            _BATCH[kind] = (int(batch), tuple(batch_by))
        else:
            _BATCH.pop(kind, None)
        return fn
    return deco(func) if func is not None else deco


def batch_spec(kind: str) -> tuple[int, tuple[str, ...]] | None:
    """(max batch size, grouping params) for a batched kind, None for a per-task kind."""
    return _BATCH.get(kind)


def group_tasks(tasks: list["Task"]) -> list[list["Task"]]:
    """Split tasks into work units: single tasks, or batches of a batched kind (order kept)."""
    groups: dict[Any, list[list[Task]]] = {}
    order: list[Any] = []
    for t in tasks:
        spec = _BATCH.get(t.kind)
        gid = (t.kind, canonical_json([t.get(k) for k in spec[1]])) if spec else ("", t.key)
        if gid not in groups:
            groups[gid] = [[]]
            order.append(gid)
        if spec and len(groups[gid][-1]) >= spec[0]:
            groups[gid].append([])
        groups[gid][-1].append(t)
    return [chunk for gid in order for chunk in groups[gid]]


def _import(ref: str) -> Any:
    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def task_function(kind: str) -> Callable:
    """The function registered for `kind` (imported by name if this process has not seen it)."""
    if kind in _FUNCS:
        return _FUNCS[kind]
    if kind not in _REGISTRY:
        raise KeyError(f"no task function registered for kind {kind!r} (known: {', '.join(sorted(_REGISTRY))})")
    _FUNCS[kind] = _import(_REGISTRY[kind])
    return _FUNCS[kind]


def result_type(kind: str) -> type | None:
    """The dataclass results of `kind` decode to (None: plain JSON)."""
    ref = _RESULTS.get(kind)
    return _import(ref) if ref else None


def registry_snapshot() -> dict[str, Any]:
    """kind -> ('module:qualname', batch spec), to hand to worker processes."""
    return {kind: (ref, _BATCH.get(kind), _RESULTS.get(kind)) for kind, ref in _REGISTRY.items()}


def install_registry(snapshot: Mapping[str, Any]) -> None:
    """Make a snapshot's kinds known in this process (worker start-up)."""
    for kind, (ref, batch, result) in snapshot.items():
        if _REGISTRY.get(kind) != ref:
            _REGISTRY[kind] = ref
            _FUNCS.pop(kind, None)
        if result:
            _RESULTS[kind] = result
        if batch:
            _BATCH[kind] = (int(batch[0]), tuple(batch[1]))
