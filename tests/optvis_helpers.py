"""Small models and measurements shared by the optvis tests."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from vizsuite.zoo.spec import ModelSpec, VisionModel

ORIENTATIONS = [i * 180 / 8 for i in range(8)]  # degrees, 22.5 apart


def gabor_bank(size: int = 11, wavelength: float = 5.0, sigma: float = 2.5) -> torch.Tensor:
    """8 x 3 x size x size Gabor filters, one per orientation (zero mean, on luminance)."""
    r = (size - 1) / 2
    y, x = torch.meshgrid(torch.arange(size) - r, torch.arange(size) - r, indexing="ij")
    filters = []
    for deg in ORIENTATIONS:
        t = math.radians(deg)
        # carrier varies along direction (cos t, sin t) in (x, y): frequency vector at angle t
        u = x * math.cos(t) + y * math.sin(t)
        g = torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2)) * torch.cos(2 * math.pi * u / wavelength)
        g = g - g.mean()
        g = g / g.abs().sum()
        filters.append(g.expand(3, -1, -1) / 3)
    return torch.stack(filters).float()


def oriented_cnn(input_size: int = 64) -> VisionModel:
    """A tiny CNN whose 8 channels are oriented grating (Gabor) detectors: conv -> relu -> pool."""
    conv = nn.Conv2d(3, 8, 11, padding=5, bias=False)
    with torch.no_grad():
        conv.weight.copy_(gabor_bank())
    net = nn.Sequential()
    net.add_module("conv", conv)
    net.add_module("relu", nn.ReLU())
    net.add_module("pool", nn.AvgPool2d(2))
    spec = ModelSpec(name="oriented", builder=lambda: net, input_size=input_size, mean=(0.0, 0.0, 0.0),
                     std=(1.0, 1.0, 1.0), labels=())
    model = VisionModel(net, spec).eval()
    model.requires_grad_(False)
    return model


def tiny_cnn(input_size: int = 32, requires_grad: bool = False) -> VisionModel:
    """conv1 -> relu1 -> conv2 -> relu2 -> pool -> flatten -> fc (10 classes), seeded."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(8, 8, 3, padding=1))
    net.add_module("relu2", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 10))
    spec = ModelSpec(name="tiny", builder=lambda: net, input_size=input_size)
    model = VisionModel(net, spec).eval()
    model.requires_grad_(requires_grad)
    return model


def dominant_orientation(image: torch.Tensor) -> float:
    """Angle (degrees, 0..180) of the frequency vector carrying most power in a 3 x H x W image.

    Power-weighted mean of the doubled angle over the spectrum (DC removed, windowed), so the
    answer is the orientation of the gratings' frequency vector, comparable to the filter's.
    """
    g = image[:3].mean(0).double().numpy()
    g = g - g.mean()
    h, w = g.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fft2(g * win)) ** 2
    fy = np.fft.fftfreq(h)[:, None] * np.ones((1, w))
    fx = np.fft.fftfreq(w)[None, :] * np.ones((h, 1))
    f = np.hypot(fx, fy)
    keep = f > 1.5 / max(h, w)  # ignore the lowest frequencies (overall shading)
    # image rows grow downwards: y is the row index, matching the filter's meshgrid
    ang2 = 2 * np.arctan2(fy, fx)
    c = (power * np.cos(ang2))[keep].sum()
    s = (power * np.sin(ang2))[keep].sum()
    return (math.degrees(math.atan2(s, c)) / 2) % 180


def angle_diff(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)
