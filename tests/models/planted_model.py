"""A planted model: F* = 48 known sparse features written in superposition into C = 24 channels.

Loadable as `tests/models/planted_model.py:spec` (and `:other`, the same architecture with other
weights). Layer `codes` reads each 4x4 RGB patch of the image as 48 feature values (an identity
conv, stride 4); `mix` writes them into 24 channels along unit-norm random directions
(`directions()`, F* x C); a pooled linear head gives 10 classes. `write_images` draws images
whose every patch has 1-3 active features with values in [0.5, 1]: at `mix`, every position is
a sparse non-negative combination of the planted directions.
"""

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vizsuite.zoo import ModelSpec

FEATURES, CHANNELS, PATCH = 48, 24, 4


def directions(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return nn.functional.normalize(torch.randn(FEATURES, CHANNELS, generator=g), dim=1)


def build(seed: int = 0) -> nn.Module:
    codes = nn.Conv2d(3, FEATURES, PATCH, stride=PATCH, bias=False)
    mix = nn.Conv2d(FEATURES, CHANNELS, 1, bias=False)
    fc = nn.Linear(CHANNELS, 10)
    with torch.no_grad():
        codes.weight.copy_(torch.eye(FEATURES).view(FEATURES, 3, PATCH, PATCH))
        mix.weight.copy_(directions(seed).T[:, :, None, None])
        g = torch.Generator().manual_seed(100 + seed)
        fc.weight.copy_(torch.randn(10, CHANNELS, generator=g))
        fc.bias.zero_()
    return nn.Sequential(OrderedDict([("codes", codes), ("relu", nn.ReLU()), ("mix", mix),
                                      ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", fc)]))


def spec() -> ModelSpec:
    return ModelSpec(name="planted", builder=build, input_size=64, crop_pct=1.0, mean=(0.0,) * 3, std=(1.0,) * 3,
                     labels=tuple(f"class{i}" for i in range(10)), default_layers=("mix",))


def other() -> ModelSpec:
    return spec().replace(name="planted-other", builder=lambda: build(seed=1))


def planted_codes(rng: np.random.Generator, positions: int) -> np.ndarray:
    """positions x F* codes: 1-3 active features each, values in [0.5, 1]."""
    codes = np.zeros((positions, FEATURES), dtype=np.float32)
    for row in codes:
        active = rng.choice(FEATURES, size=rng.integers(1, 4), replace=False)
        row[active] = rng.uniform(0.5, 1.0, size=len(active))
    return codes


def write_images(folder, count: int, seed: int = 0, size: int = 64) -> Path:
    """`count` PNGs whose patches carry planted codes (quantized to 1/255)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    side = size // PATCH
    for i in range(count):
        codes = planted_codes(rng, side * side).reshape(side, side, 3, PATCH, PATCH)
        img = codes.transpose(0, 3, 1, 4, 2).reshape(size, size, 3)     # (y, py, x, px, c)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


def build_wide() -> nn.Module:
    """Wide activations for the memory test: 256 channels at 32x32 per 128 px image (1 MiB)."""
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([("wide", nn.Conv2d(3, 256, PATCH, stride=PATCH)),
                                      ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
                                      ("fc", nn.Linear(256, 10))]))


def wide() -> ModelSpec:
    return ModelSpec(name="wide", builder=build_wide, input_size=128, crop_pct=1.0, mean=(0.0,) * 3,
                     std=(1.0,) * 3, labels=tuple(f"class{i}" for i in range(10)), default_layers=("wide",))
