"""What an intervention is measured on: a class logit (or probability), the top-1 class of each
image, or another unit's value (`LAYER:K[@Y,X]`, any basis)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch

from ..errors import UserError
from ..targets import parse_target as parse_spec
from ..units import Unit


@dataclass(frozen=True)
class Target:
    """kind "class" (index), "top1" (each image's predicted class, from the intact model),
    "unit", or "all" (every class at once: a row of logits, or of probabilities with `prob`;
    built in code, not parsed). `prob`: a class target reads the softmax probability instead
    of the logit."""

    kind: str
    index: Optional[int] = None
    unit: Optional[Unit] = None
    prob: bool = False
    label: Optional[str] = None

    def __str__(self) -> str:
        if self.kind == "unit":
            return str(self.unit)
        what = "probability" if self.prob else "logit"
        if self.kind == "top1":
            return f"top1 {what}"
        if self.kind == "all":
            return f"every class's {what}"
        return f"{self.index}{' (' + self.label + ')' if self.label else ''} {what}"

    @property
    def layer(self) -> Optional[str]:
        return self.unit.layer if self.unit is not None else None

    def as_dict(self) -> dict:
        if self.kind == "unit":
            return {"kind": "unit", "unit": str(self.unit), **self.unit.to_json()}
        return {"kind": self.kind, "index": self.index, "label": self.label,
                "quantity": "probability" if self.prob else "logit"}

    def classes(self, logits: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
        """The class read for each of n images (None for a unit target)."""
        if self.kind in ("unit", "all"):
            return None
        if self.kind == "top1":
            return logits.detach().argmax(1)
        if logits is not None and not 0 <= self.index < logits.shape[1]:
            raise UserError(f"class index {self.index} out of range (model has {logits.shape[1]} classes: "
                            f"0..{logits.shape[1] - 1})")
        return torch.full((n,), int(self.index), dtype=torch.long)

    def read(self, logits: Optional[torch.Tensor], acts: dict, classes: Optional[torch.Tensor]) -> torch.Tensor:
        """The target's value per row (rows of `logits` / the target layer's activation)."""
        if self.kind == "unit":
            return self.unit.value(acts[self.unit.layer])
        if logits is None or logits.dim() != 2:
            raise UserError("a class target needs a model that outputs N x classes logits")
        scores = torch.softmax(logits.double(), 1) if self.prob else logits
        if self.kind == "all":
            return scores
        cls = classes.to(logits.device)
        if cls.numel() == 1 and scores.shape[0] > 1:
            cls = cls.expand(scores.shape[0])
        return scores.gather(1, cls.view(-1, 1))[:, 0]


def parse_target(target: Union[str, int, Unit, Target], model=None, bases=None, prob: bool = False) -> Target:
    """`top1`, a class INDEX, a class LABEL (with a model that has labels), `LAYER:K[@Y,X]` or a
    Unit (the shared grammar, `vizsuite.targets`); UserError for anything else, and for forms
    that name several quantities per image (topK with K > 1, one class per image)."""
    if isinstance(target, Target):
        return target
    spec = parse_spec(target, bases)
    if spec.kind == "unit":
        if prob:
            raise UserError(f"--prob applies to class targets, not to unit target {spec.unit}")
        return Target("unit", unit=spec.unit)
    if spec.kind == "top":
        if spec.k != 1:
            raise UserError(f"target top{spec.k}: an intervention measures one class per image; use top1")
        return Target("top1", prob=prob)
    if spec.kind == "class":
        if spec.index < 0:
            raise UserError(f"bad target class {spec.index}: indices start at 0")
        return Target("class", index=spec.index, prob=prob, label=_label(model, spec.index))
    if spec.kind == "label":
        if model is None or not hasattr(model, "class_index"):
            raise UserError(f"target {spec.label!r}: this model has no class labels; pass an index")
        index = model.class_index(spec.label)
        return Target("class", index=index, prob=prob, label=_label(model, index))
    raise UserError(f"target {target!r}: give one target for all images (top1, a class or a unit)")


def _label(model, index: int) -> Optional[str]:
    label = getattr(model, "label", None)
    return label(index) if callable(label) else None
