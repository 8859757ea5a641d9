"""Planted models for concept tests (tests/test_concepts.py).

`spec`: layer `mid` is a fixed 1x1 conv of the RGB image into C = 8 channels (`weights()`); the
head averages `mid` over positions and reads class 0 along the planted direction `planted()`
(unit norm, = W c / |W c| for the concept colour `CONCEPT_RGB`), class 1 along its opposite and
classes 2..9 along seeded directions orthogonal to it. Concept images (`write_images(...,
concept=True)`) are noise plus `CONCEPT_RGB`: at `mid` they add a multiple of the planted
direction at every position. The model is linear, so d logit_0 / d mid is the planted direction
(over the positions) on every image: TCAV is 1 for class 0 and 0 for class 1 whenever the CAV
has a positive cosine with it.

`nonlinear`: the same `mid`, then ReLU, a seeded 3x3 conv `conv2`, ReLU, pool and a seeded
linear head: gradients differ per image (the captum-equality test).
"""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vizsuite.zoo import ModelSpec

C = 8
CONCEPT_RGB = np.array([0.45, 0.0, 0.0], dtype=np.float32)


def weights() -> torch.Tensor:
    return torch.randn(C, 3, generator=torch.Generator().manual_seed(7))


def planted() -> torch.Tensor:
    d = weights() @ torch.as_tensor(CONCEPT_RGB)
    return d / d.norm()


def build() -> nn.Module:
    mid = nn.Conv2d(3, C, 1, bias=False)
    fc = nn.Linear(C, 10, bias=False)
    with torch.no_grad():
        mid.weight.copy_(weights()[:, :, None, None])
        d = planted()
        rest = torch.randn(8, C, generator=torch.Generator().manual_seed(8))
        rest = rest - (rest @ d)[:, None] * d[None]
        fc.weight.copy_(torch.cat([d[None], -d[None], rest]))
    return nn.Sequential(OrderedDict([("mid", mid), ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
                                      ("fc", fc)]))


def build_nonlinear() -> nn.Module:
    g = torch.Generator().manual_seed(11)
    mid = nn.Conv2d(3, C, 1, bias=False)
    conv2 = nn.Conv2d(C, C, 3, padding=1)
    fc = nn.Linear(C, 10)
    with torch.no_grad():
        mid.weight.copy_(weights()[:, :, None, None])
        for p in (conv2.weight, conv2.bias, fc.weight, fc.bias):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return nn.Sequential(OrderedDict([("mid", mid), ("relu1", nn.ReLU()), ("conv2", conv2), ("relu2", nn.ReLU()),
                                      ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", fc)]))


def spec() -> ModelSpec:
    return ModelSpec(name="concept-planted", builder=build, input_size=16, crop_pct=1.0, mean=(0.0,) * 3,
                     std=(1.0,) * 3, labels=tuple(f"class{i}" for i in range(10)), default_layers=("mid",))


def nonlinear() -> ModelSpec:
    return spec().replace(name="concept-nonlinear", builder=build_nonlinear)


def write_images(folder, count: int, seed: int = 0, concept: bool = False, size: int = 16) -> Path:
    """`count` PNGs of uniform noise in [0, 0.5] (plus CONCEPT_RGB for concept images)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = rng.uniform(0.0, 0.5, size=(size, size, 3)).astype(np.float32)
        if concept:
            img = img + CONCEPT_RGB
        Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return folder
