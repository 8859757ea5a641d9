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
    #: signed expanded weight of every channel of the previous layer (compared with measured effects)
    input_weights: list[float] = field(default_factory=list)


@dataclass
class InputEffect:
    """A measured edge: ablating input channel `unit` changes the page's unit by `effect` (mean
    over the unit's top dataset examples, exact); `weight`: its expanded weight, when known."""

    unit: int
    effect: float
    weight: Optional[float] = None


@dataclass
class UnitEffects:
    """`unit_effects`: what a unit does and what it uses, measured by ablation.

    drops / rises: the classes whose probability falls / rises most (mean change over the
    gallery's images) when the unit is ablated; inputs: the previous layer's channels whose
    ablation changes the unit most over its top examples; weights_agreement: Spearman
    correlation over all input channels of expanded weights and measured effects;
    weights_note: why the weight view is not shown (empty: it is meaningful)."""

    mode: str
    images: int
    drops: list[ClassScore] = field(default_factory=list)
    rises: list[ClassScore] = field(default_factory=list)
    inputs: list[InputEffect] = field(default_factory=list)
    examples: int = 0
    weights_agreement: Optional[float] = None
    weights_max: Optional[float] = None
    weights_note: str = ""


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


@dataclass
class AblationChunk:
    """`ablation_chunk`: exact effects (images x units of the chunk), first-order estimates, the
    intact target per image, the class read per image (class targets) and the images used."""

    exact: list[list[float]]
    estimate: list[list[float]]
    baseline: list[float]
    classes: Optional[list[int]] = None
    images: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class DictionaryEval:
    """`dictionary_eval`: a dictionary basis over an image folder (every position): R², mean L0,
    dead fraction and each feature's frequency (fraction of positions where it is active)."""

    r2: float
    mean_l0: float
    dead_fraction: float
    frequency: list[float]
    vectors: int
    images: int


@dataclass
class FeatureComparison:
    """`feature_comparison`: neurons vs a dictionary's features of one layer on the same images.
    Entropy (bits) of the model's predicted classes over each unit's top-k examples (None: never
    fires); features_per_neuron: how many distinct features dominate a neuron's top examples."""

    layer: str
    k: int
    images: int
    neuron_entropy_bits: list[Optional[float]]
    feature_entropy_bits: list[Optional[float]]
    feature_indices: list[int]
    features_per_neuron: list[int]
    mean_neuron_entropy_bits: Optional[float] = None
    mean_feature_entropy_bits: Optional[float] = None
    mean_features_per_neuron: Optional[float] = None
    live_features: int = 0
