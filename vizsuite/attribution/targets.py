"""What to explain: a class (index or label), the top-k predicted classes, or a hidden unit.

The grammar is `vizsuite.targets` (shared by every `--target`). A request resolves to rows,
image-major: image 0's targets first, then image 1's; top-k gives k rows per image, ranked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import UserError
from ..targets import TargetLike, TargetSpec, parse_target
from ..units import Unit

__all__ = ["Target", "TargetLike", "TargetSpec", "parse_target", "resolve_targets"]


@dataclass(frozen=True)
class Target:
    """One explained quantity: class `index` (with label and rank) or a hidden `unit` of one image."""

    image: int
    kind: str                      # "class" | "unit"
    index: Optional[int] = None
    label: Optional[str] = None
    rank: Optional[int] = None     # 1-based rank among the predictions, for top-k
    unit: Optional[Unit] = None

    def __str__(self) -> str:
        if self.kind == "unit":
            return str(self.unit)
        return f"{self.index} ({self.label})" if self.label else str(self.index)

    def as_dict(self) -> dict:
        if self.kind == "unit":
            return {"kind": "unit", "unit": str(self.unit), "layer": self.unit.layer,
                    "channel": self.unit.channel, "y": self.unit.y, "x": self.unit.x,
                    **({"basis": self.unit.basis.ref()} if not self.unit.is_channel else {})}
        return {"kind": "class", "index": self.index, "label": self.label, "rank": self.rank}


def resolve_targets(model, spec: TargetSpec, logits: Optional[torch.Tensor], n: int) -> list[Target]:
    """Rows for n images; `logits` (N x classes) is needed for top-k and to check indices."""
    label = getattr(model, "label", lambda i: None)
    if spec.kind == "unit":
        return [Target(i, "unit", unit=spec.unit) for i in range(n)]
    classes = None if logits is None else logits.shape[1]

    def check(index: int) -> int:
        if classes is not None and not 0 <= index < classes:
            raise UserError(f"class index {index} out of range (model has {classes} classes: 0..{classes - 1})")
        return index

    if spec.kind == "class":
        return [Target(i, "class", check(spec.index), label(spec.index)) for i in range(n)]
    if spec.kind == "label":
        if not hasattr(model, "class_index"):
            raise UserError(f"target {spec.label!r}: this model has no class labels; pass an index")
        index = check(model.class_index(spec.label))
        return [Target(i, "class", index, label(index)) for i in range(n)]
    if spec.kind == "per_image":
        if len(spec.indices) != n:
            raise UserError(f"{len(spec.indices)} targets given for {n} images")
        return [Target(i, "class", check(c), label(c)) for i, c in enumerate(spec.indices)]
    # top-k
    if logits is None:
        raise RuntimeError("top-k targets need the model output")
    k = min(spec.k, classes)
    top = logits.detach().topk(k, dim=1).indices.tolist()
    return [Target(i, "class", c, label(c), rank=r + 1) for i in range(n) for r, c in enumerate(top[i])]
