"""Page data: plain dataclasses the torch side fills and the site writer renders (torch-free).

Image paths (`Img.src`) are relative to the site root, forward slashes; the writer turns them
into page-relative URLs. Units are referred to by (layer, unit): the writer links a unit only
when its page is part of the site, so no link can dangle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..tasks.results import ClassScore, GraphEdge, GraphNode, ModelGraph  # the same records as task results


@dataclass
class Img:
    """An image file inside the site."""

    src: str
    alt: str = ""
    caption: str = ""
    width: Optional[int] = None
    height: Optional[int] = None


@dataclass
class LayerSummary:
    """One row of the architecture table."""

    name: str
    type: str
    shape: tuple[int, ...]
    channels: int
    default: bool = False
    receptive_field: Optional[int] = None  # pixels per side (measured, analysis.receptive)
    clipped: bool = False  # the field is at least receptive_field wide (wider than measured)
    whole: bool = False  # the layer sees the whole image (after a global pool)


@dataclass
class ModelInfo:
    name: str
    layers: list[LayerSummary] = field(default_factory=list)
    description: str = ""
    source: str = ""
    licence: str = ""
    input_size: Optional[int] = None
    fingerprint: str = ""
    graph: Optional[ModelGraph] = None  # meaningful layers and how they connect (analysis.graph)


@dataclass
class UnitCard:
    """A unit in a layer page's grid (and in the site's search index). Unknown values are None:
    the page sorts them last. `description` is the one-line text a describe task gives
    (`card.description = text`)."""

    unit: int
    thumb: Optional[Img] = None
    caption: str = ""
    description: Optional[str] = None
    mean_activation: Optional[float] = None  # over every image and position of the dataset pass
    selectivity: Optional[float] = None  # (mean of the top-k maxima - mean) / std: how far its best stand out
    top_classes: list[str] = field(default_factory=list)  # labels of the classes it most supports
    concepts: list[str] = field(default_factory=list)  # concept directions that use it (search)


@dataclass
class Comparison:
    """Neurons vs dictionary features of one layer on the same images (docs/units.md): mean
    entropy (bits) of the predicted classes over each unit's top-k examples (lower: more
    selective), and the neurons whose top examples split into the most distinct features."""

    layer: str
    basis: str
    k: int
    images: int
    mean_neuron_entropy: Optional[float]
    mean_feature_entropy: Optional[float]
    live_features: int
    features: int
    mean_features_per_neuron: Optional[float]
    most_split: list[tuple[int, int, Optional[float]]] = field(default_factory=list)  # (neuron, features, entropy)


@dataclass
class LayerPage:
    name: str
    units: list[UnitCard] = field(default_factory=list)
    deepdream: Optional[Img] = None
    note: str = ""
    comparison: Optional[Comparison] = None


@dataclass
class Example:
    """A dataset example: the crop around the unit's strongest position, its activation value;
    `overlay`: the unit's activation map over the crop (same size, transparent PNG); `full`:
    the whole image as the model saw it, `box`: the receptive field in it as (top, left, side)
    fractions of the image side."""

    image: Img
    value: float
    source: str = ""
    overlay: Optional[Img] = None
    full: Optional[Img] = None
    box: Optional[tuple[float, float, float]] = None


@dataclass
class Connection:
    """A unit linked to the page's unit by expanded weights (`weight`: norm, signed by the sum)."""

    layer: str
    unit: int
    weight: float
    thumb: Optional[Img] = None
    heatmap: Optional[Img] = None


@dataclass
class MeasuredInput:
    """An input unit whose ablation changes the page's unit by `effect` (exact, mean over the
    unit's top dataset examples); `weight`: its expanded weight (None when not shown)."""

    layer: str
    unit: int
    effect: float
    weight: Optional[float] = None
    thumb: Optional[Img] = None


@dataclass
class Effects:
    """What a unit does (classes whose probability drops / rises when it is ablated over the
    gallery's images) and what it uses (measured inputs); `weights_note` says why the weight
    view is hidden (empty: shown)."""

    mode: str
    images: int
    drops: list[ClassScore] = field(default_factory=list)
    rises: list[ClassScore] = field(default_factory=list)
    inputs: list[MeasuredInput] = field(default_factory=list)
    examples: int = 0
    weights_agreement: Optional[float] = None
    weights_note: str = ""


@dataclass
class Curve:
    """One tuning curve of a description: `svg` is an inline <svg> the describe engine drew."""

    family: str
    parameter: str
    units: str
    preferred: float
    selectivity: float
    svg: str = ""


@dataclass
class Description:
    """A unit's one-line description from measured evidence (docs/describe.md)."""

    text: str
    confidence: float
    reasons: list[str] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    simulation: Optional[float] = None  # correlation of the description's prediction with the unit
    control: Optional[float] = None  # the same with another unit's description


@dataclass
class NeuronPage:
    layer: str
    unit: int
    main: Optional[Img] = None
    diversity: list[Img] = field(default_factory=list)
    negative: Optional[Img] = None
    positive_examples: list[Example] = field(default_factory=list)
    negative_examples: list[Example] = field(default_factory=list)
    classes: list[ClassScore] = field(default_factory=list)
    inputs: list[Connection] = field(default_factory=list)
    outputs: list[Connection] = field(default_factory=list)
    effects: Optional[Effects] = None
    made_of: list[Connection] = field(default_factory=list)  # a feature: the neurons its decoder writes most
    features: list[Connection] = field(default_factory=list)  # a neuron: features whose decoders use it most
    outputs_note: str = ""  # why the expanded weights to the next layer are hidden ('' = shown)
    #: next-layer gallery units among whose measured inputs this unit is (effect: theirs when it is ablated)
    drives: list[MeasuredInput] = field(default_factory=list)
    description: Optional[Description] = None
    note: str = ""
    # dictionary features / concept directions that use this unit: (label, href relative to
    # the site root); linked when the target page exists
    related: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SpatialNeuronPage:
    """One spatial neuron `layer:unit@y,x` (docs/units.md): its render; linked from the channel page."""

    layer: str
    unit: int
    y: int
    x: int
    main: Optional[Img] = None
    receptive_field: Optional[int] = None
    note: str = ""


@dataclass
class CircuitNode:
    layer: str
    unit: int
    thumb: Optional[Img] = None


@dataclass
class CircuitEdge:
    """src feeds dst (src in an earlier layer) with `weight`: an expanded weight, or (pages
    whose `measure` is "ablation") the measured change of dst when src is ablated."""

    src: tuple[str, int]
    dst: tuple[str, int]
    weight: float


@dataclass
class CircuitPage:
    """A unit (levels[0][0]) and its strongest inputs, one level per earlier layer."""

    layer: str
    unit: int
    levels: list[list[CircuitNode]] = field(default_factory=list)
    edges: list[CircuitEdge] = field(default_factory=list)
    measure: str = "expanded weight"  # or "ablation": edges are measured contributions (intact - ablated)
    note: str = ""


@dataclass
class SiteData:
    model: ModelInfo
    layers: list[LayerPage] = field(default_factory=list)
    neurons: list[NeuronPage] = field(default_factory=list)
    circuits: list[CircuitPage] = field(default_factory=list)
    title: str = ""
    spatial: list[SpatialNeuronPage] = field(default_factory=list)
