"""What to measure or explain, as a user names it: one grammar for every `--target`
(docs/conventions.md). Forms: `3`, `"tabby"`, `"top1"`, `"top5"`, `[3, 281]` (one per image),
`"LAYER:K[@Y,X]"`, `"LAYER/BASIS:K"` (a `units.Unit`). Attribution resolves a spec into rows
(top-k: k per image); interventions into one measured quantity per image."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from .errors import UserError
from .units import Unit, parse_unit

TargetLike = Union[int, str, Unit, Sequence[int], "TargetSpec"]

_TOP = re.compile(r"^top[-_]?(\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target request (before seeing the model's output)."""

    kind: str                      # "class" | "label" | "top" | "unit" | "per_image" | "per_row" (internal)
    index: Optional[int] = None
    label: Optional[str] = None
    k: int = 1
    unit: Optional[Unit] = None
    indices: tuple[int, ...] = ()

    def __str__(self) -> str:
        return {"class": lambda: str(self.index), "label": lambda: str(self.label),
                "top": lambda: f"top{self.k}", "unit": lambda: str(self.unit),
                "per_image": lambda: ",".join(map(str, self.indices))}[self.kind]()


def parse_target(target: TargetLike, bases=None) -> TargetSpec:
    """Turn what a user typed (or passed) into a TargetSpec; UserError for malformed input.
    `bases` (NAME -> Basis) resolves `LAYER/BASIS:K` units."""
    if isinstance(target, TargetSpec):
        return target
    if isinstance(target, Unit):
        return TargetSpec("unit", unit=target)
    if isinstance(target, bool):
        raise UserError(f"bad target {target!r}")
    if isinstance(target, int):
        return TargetSpec("class", index=int(target))
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if not target or not all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            raise UserError(f"bad target list {target!r}: expected class indices, one per image")
        return TargetSpec("per_image", indices=tuple(int(t) for t in target))
    if not isinstance(target, str) or not target.strip():
        raise UserError(f"bad target {target!r}: expected top1, topK, INDEX, LABEL or LAYER:UNIT[@Y,X]")
    text = target.strip()
    if m := _TOP.match(text):
        k = int(m.group(1))
        if k < 1:
            raise UserError(f"bad target {text!r}: k must be at least 1")
        return TargetSpec("top", k=k)
    if re.fullmatch(r"-?\d+", text):
        return TargetSpec("class", index=int(text))
    if ":" in text:
        return TargetSpec("unit", unit=parse_unit(text, bases))
    return TargetSpec("label", label=text)


