"""ModelSpec (what a model is and how to feed it) and VisionModel (a net that eats [0, 1] RGB)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import UserError, close_matches

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build, load and feed one model.

    `builder()` returns the architecture with (seeded) random weights; `pretrained()`, when set,
    returns it with real weights or raises UserError saying how to get them offline.
    """

    name: str
    builder: Callable[[], nn.Module]
    pretrained: Optional[Callable[[], nn.Module]] = None
    weights_source: str = "none"
    input_size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    labels: tuple[str, ...] = ()
    default_layers: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    licence: str = ""
    weights_hint: str = ""
    #: gradient rule at ReLUs when rendering (vizsuite.optvis.relu): "redirect" | "leaky" | "exact"
    relu_grad: str = "redirect"

    def replace(self, **changes) -> "ModelSpec":
        """A copy with some fields changed (overrides such as --mean/--std/--input-size)."""
        return dataclasses.replace(self, **changes)


@lru_cache(maxsize=None)
def label_set(name: str) -> tuple[str, ...]:
    """Class labels shipped as package data (`imagenet`: 1000, `inception5h`: 1008)."""
    try:
        text = resources.files("vizsuite.zoo").joinpath("data", f"{name}_labels.txt").read_text("utf-8")
    except FileNotFoundError:
        raise UserError(f"no label set named {name!r}") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


class VisionModel(nn.Module):
    """A network plus its preprocessing: `forward` takes RGB in [0, 1] and returns logits.

    Layers are addressed by dotted `named_modules()` paths of the inner network (`self.net`),
    so names match what the user's own model calls them.
    """

    def __init__(self, net: nn.Module, spec: ModelSpec):
        super().__init__()
        self.net = net
        self.spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))
        #: False: `forward` normalizes, and the net takes normalized input in its own dtype.
        #: True: the net's first layer takes the [0, 1] input of any float dtype and normalizes
        #: and casts it itself (render's private copy: `optvis.convs.absorb_normalization`).
        self.raw_input = False

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] RGB to what the network was trained on: (x - mean) / std, computed as
        x * (1/std) - mean/std in one fused pass, constants from the spec in float64 (exact
        in any dtype the copy runs in: 255 and -117 for Lucid's InceptionV1; the bf16 buffers
        of a bf16 copy would give 256 and -117.5). A broadcast division over a channels-last
        batch took 4x as long, forward and backward."""
        scale, shift = (t.view(1, -1, 1, 1).to(x.device, x.dtype) for t in self.normalization())
        if x.dim() == 4 and x.shape[1] > 1 and not x.is_contiguous() \
                and x.is_contiguous(memory_format=torch.channels_last):
            # channels-last: a (1, C, 1, 1) broadcast iterates over runs of C = 3 elements
            # (4x slower, forward and backward); as rows of W*C values times a W-times repeated
            # (scale, shift) it is one contiguous, vectorized pass (views only, layout kept)
            n, c, h, w = x.shape
            rows = x.permute(0, 2, 3, 1).reshape(n * h, w * c)
            out = torch.addcmul(shift.reshape(-1).repeat(w), rows, scale.reshape(-1).repeat(w))
            return out.view(n, h, w, c).permute(0, 3, 1, 2)
        return torch.addcmul(shift, x, scale)

    def normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) per channel, float64 from the spec: normalize(x) = x * scale + shift."""
        std = torch.tensor(self.spec.std, dtype=torch.float64)
        mean = torch.tensor(self.spec.mean, dtype=torch.float64)
        return 1 / std, -mean / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x if self.raw_input else self.normalize(x))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def label(self, index: int) -> str:
        """Human label of a class index (falls back to 'class N')."""
        return self.spec.labels[index] if 0 <= index < len(self.spec.labels) else f"class {index}"

    def layer_names(self) -> list[str]:
        """Every addressable layer: dotted paths of the inner network's modules."""
        return [name for name, _ in self.net.named_modules() if name]

    def layer(self, name: str) -> nn.Module:
        """The module at a dotted path; UserError with close matches when unknown."""
        modules = dict(self.net.named_modules())
        if not name or name not in modules:
            raise UserError(f"unknown layer {name!r} in model {self.name}"
                            f"{close_matches(name, [n for n in modules if n])}")
        return modules[name]

    def class_index(self, label: str) -> int:
        """Class index from a label ('tabby' matches 'tabby, tabby cat'); UserError when unknown."""
        wanted = label.strip().lower()
        for i, full in enumerate(self.labels):
            names = [p.strip().lower() for p in full.split(",")]
            if wanted == full.lower() or wanted in names:
                return i
        raise UserError(f"unknown class label {label!r} for model {self.name}"
                        f"{close_matches(label, self.labels)}")
