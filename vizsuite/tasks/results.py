"""Typed results of the task kinds (stored as JSON in done.json, read back with
`TaskResult.value`). Torch-free: the page layers read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..analysis.graph import GraphEdge, GraphNode, ModelGraph  # torch-free dataclasses (`model_graph` kind)


@dataclass
class UnitRender:
    """`render_unit`: image.png; the objective value reached (measured plainly) and its description."""

    value: float
    objective: str


@dataclass
class DiversitySet:
    """`render_diversity`: the set's files, each image's channel value, the objective."""

    files: list[str]
    values: list[float]
    objective: str


@dataclass
class Connection:
    """One strongest input/output of a unit: the other unit's index, the signed expanded
    weight, and its heatmap file."""

    unit: int
    weight: float
    heatmap: str


@dataclass
class ClassScore:
    index: int
    label: str
    score: float


@dataclass
class UnitCircuits:
    """`unit_circuits`: strongest inputs (previous layer), outputs (next layer), classes."""

    inputs: list[Connection] = field(default_factory=list)
    outputs: list[Connection] = field(default_factory=list)
    classes: list[ClassScore] = field(default_factory=list)


@dataclass
class CircuitGraph:
    """`circuit_graph`: levels of (layer, unit) nodes, the unit first; weighted edges (src, dst, w)."""

    levels: list[list[tuple[str, int]]]
    edges: list[tuple[tuple[str, int], tuple[str, int], float]]

    def nodes(self) -> list[tuple[str, int]]:
        return [tuple(n) for level in self.levels for n in level]


@dataclass
class ExampleFile:
    """One example crop; `overlay`: its activation-map PNG, `full`: the whole image's file,
    `box`: the receptive field in it as (top, left, side) fractions."""

    file: str
    value: float
    image: str
    overlay: str = ""
    full: str = ""
    box: Optional[tuple[float, float, float]] = None


@dataclass
class DatasetResult:
    """`dataset_examples`: units covered, the receptive field, per unit {pos, neg} crop files."""

    units: list[int]
    rf: dict
    crops: dict[str, dict[str, list[ExampleFile]]]
    skipped: int = 0
    mean: list[Optional[float]] = field(default_factory=list)  # per unit (as `units`): over images and positions
    selectivity: list[Optional[float]] = field(default_factory=list)  # per unit: (mean top-k max - mean) / std


@dataclass
class IconChunk:
    """`atlas_icons`: objective value of each icon of the chunk (icon_000.png ...)."""

    values: list[float]
    seconds_per_step: float = 0.0


@dataclass
class AtlasLayout:
    """`atlas_layout`: layout.npz with samples and their 2-D coordinates."""

    samples: int
    reduce: str
    grid: list[int]
    channels: int
    skipped: Optional[int] = 0
