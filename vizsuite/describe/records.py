"""The typed results of describing units (torch-free: task results and page data read them).
Contract: docs/describe.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Tuning:
    """A unit's tuning curve over one stimulus family.

    parameter/units: what the curve runs over (``orientation`` deg, ``hue`` deg, ``facing`` deg,
    ``spacing`` px, ``square`` px); values/curve: the curve (the response at the best secondary
    parameter, averaged over the nuisance one); preferred: the preferred value (circular mean for
    circular families, argmax otherwise); selectivity in [0, 1]; drive: best response minus the
    blank's, as a fraction of the unit's best drive over all families (1 for the best family);
    response: the best raw response; secondary: the best period / saturation / radius (0: none);
    index: position of the preferred stimulus in the family's grid (simulation features)."""

    family: str
    parameter: str
    units: str
    preferred: float
    selectivity: float
    drive: float
    response: float
    values: list[float]
    curve: list[float]
    secondary: float = 0.0
    index: int = 0


@dataclass
class ClassShare:
    """A class among the model's predictions on a unit's top-k examples: count, share, lift
    over its share among all images (0: no more than chance, 1: all top-k)."""

    index: int
    label: str
    count: int
    share: float
    lift: float = 0.0


@dataclass
class ConceptScore:
    """AUROC of the unit's value for concept images against random images."""

    name: str
    auroc: float
    positives: int
    negatives: int


@dataclass
class ClassEffect:
    """The mean change of a class's logit when the unit is zero-ablated, over the images the
    model predicts as that class (negative: the unit supports the class); fraction: the share
    of the intact logit it removes."""

    index: int
    label: str
    effect: float
    fraction: float
    images: int


@dataclass
class Evidence:
    tuning: list[Tuning] = field(default_factory=list)
    blank: float = 0.0
    top_classes: list[ClassShare] = field(default_factory=list)
    label_entropy: Optional[float] = None
    top_k: int = 0
    concepts: list[ConceptScore] = field(default_factory=list)
    causal: list[ClassEffect] = field(default_factory=list)

    def family(self, name: str) -> Optional[Tuning]:
        return next((t for t in self.tuning if t.family == name), None)


@dataclass
class Claim:
    """One part of a description: its text, the evidence kind and key it comes from, its score
    in [0, 1] and why."""

    text: str
    kind: str          # tuning | classes | concept | causal
    key: str           # the family, class label or concept name
    score: float
    reason: str


@dataclass
class Simulation:
    """Held-out correlation of the activation predicted from the description's features with
    the true one (own), and from another unit's description (control)."""

    correlation: float
    control: float
    features: list[str]
    train: int
    test: int


@dataclass
class UnitDescription:
    """`describe_units` result for one unit: the line, its confidence and reasons, the evidence."""

    unit: str
    unit_json: dict
    description: str
    confidence: float
    claims: list[Claim]
    evidence: Evidence
    simulation: Optional[Simulation] = None

    @property
    def reasons(self) -> list[str]:
        return [c.reason for c in self.claims]

    def item(self) -> dict:
        """The manifest / descriptions.json item (docs/describe.md)."""
        ev = self.evidence
        return {
            "unit": self.unit, "unit_json": self.unit_json, "description": self.description,
            "confidence": round(self.confidence, 4), "reasons": self.reasons,
            "tuning": {t.family: {"parameter": t.parameter, "units": t.units, "preferred": round(t.preferred, 3),
                                  "selectivity": round(t.selectivity, 4), "drive": round(t.drive, 4),
                                  "response": t.response, "secondary": t.secondary,
                                  "values": t.values, "curve": t.curve} for t in ev.tuning},
            "blank": ev.blank,
            "top_classes": [{"label": c.label, "index": c.index, "count": c.count, "share": round(c.share, 4),
                             "lift": round(c.lift, 4)} for c in ev.top_classes],
            "label_entropy": ev.label_entropy, "top_k": ev.top_k,
            "concepts": {c.name: {"auroc": round(c.auroc, 4), "positives": c.positives, "negatives": c.negatives}
                         for c in ev.concepts},
            "causal": [{"label": c.label, "index": c.index, "effect": c.effect, "fraction": round(c.fraction, 4),
                        "images": c.images} for c in ev.causal],
            "simulation": None if self.simulation is None else {
                "correlation": self.simulation.correlation, "control": self.simulation.control,
                "features": self.simulation.features, "train": self.simulation.train,
                "test": self.simulation.test},
        }
