"""A planted model for unit descriptions: 8 oriented Gabor channels (0, 22.5, ... 157.5 deg,
the optvis tests' bank) and 6 colour channels tuned to known hues, then a pooled linear head
over 10 labelled classes. Layer `relu` (14 channels) is what the tests describe.

`write_textures` draws images with a grating of a random orientation and a random colour tint,
so every planted unit's activation varies across images."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vizsuite.describe.stimuli import hsv_to_rgb
from vizsuite.zoo.spec import ModelSpec, VisionModel

try:  # imported as tests.models.describe_model, or loaded by path as `describe_model.py:spec`
    from ..optvis_helpers import ORIENTATIONS, gabor_bank
except ImportError:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.optvis_helpers import ORIENTATIONS, gabor_bank  # noqa: F401

HUES = (0.0, 50.0, 120.0, 200.0, 240.0, 300.0)


def build() -> nn.Module:
    conv = nn.Conv2d(3, 8 + len(HUES), 11, padding=5, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:8] = gabor_bank()
        for j, h in enumerate(HUES):   # the chroma direction of the hue, at the centre tap
            c = torch.tensor(hsv_to_rgb(h, 1.0))
            conv.weight[8 + j, :, 5, 5] = (c - c.mean()) / (c - c.mean()).norm()
    fc = nn.Linear(conv.out_channels, 10)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        fc.weight.copy_(torch.randn(10, conv.out_channels, generator=g))
        fc.bias.zero_()
    return nn.Sequential(OrderedDict([("conv", conv), ("relu", nn.ReLU()), ("pool", nn.AdaptiveAvgPool2d(1)),
                                      ("flat", nn.Flatten()), ("fc", fc)]))


def spec() -> ModelSpec:
    return ModelSpec(name="planted-describe", builder=build, input_size=64, crop_pct=1.0, mean=(0.0,) * 3,
                     std=(1.0,) * 3, labels=tuple(f"class{i}" for i in range(10)), default_layers=("relu",))


def model() -> VisionModel:
    m = VisionModel(build(), spec()).eval()
    m.requires_grad_(False)
    return m


def write_textures(folder, count: int = 12, seed: int = 0, size: int = 64, angle: float | None = None) -> Path:
    """PNGs: a grating (random orientation, or `angle` +- 10 deg; period 4-7 px, contrast)
    tinted by a random hue."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    for i in range(count):
        t = math.radians(rng.uniform(0, 180) if angle is None else angle + rng.uniform(-10, 10))
        period, contrast = rng.uniform(4, 7), rng.uniform(0.1, 0.5)
        lum = 0.5 + contrast * np.cos(2 * np.pi * (x * math.cos(t) + y * math.sin(t)) / period + rng.uniform(0, 6.3))
        tint = np.array(hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.2, 1.0)))
        mix = rng.uniform(0.1, 0.6)
        img = (1 - mix) * lum[..., None] + mix * tint[None, None, :] * lum[..., None] * 1.5
        Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"tex{i:03d}.png")
    return folder
