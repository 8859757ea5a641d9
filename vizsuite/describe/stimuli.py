"""Synthetic stimulus families generated in code (docs/describe.md#stimuli).

Every stimulus is a full-field texture at the model's input size (float RGB in [0, 1], mean
grey 0.5), so a unit's mean over positions and its centre value read the same pattern. Angles
are in image coordinates: 0 deg points right (+x), 90 deg points down (+y, the row index).

- ``orientation``: sinusoidal gratings, orientation (of the wave vector: the stripes run
  perpendicular to it; period 180 deg) x period (px) x phase;
- ``hue``: uniform colour fields over hue (HSV, period 360 deg) x saturation (value 1);
- ``curve``: tiled circular arcs (120 deg of arc) facing an angle (the convex side; period
  360 deg) x radius (px) x polarity (bright or dark line);
- ``dots``: a square lattice of dots over spacing (px) x polarity;
- ``checkerboard``: checkerboards over square size (px) x phase;
- one blank (uniform grey) field: the baseline every drive is measured from.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

ORIENTATIONS = tuple(i * 15.0 for i in range(12))
HUES = tuple(i * 30.0 for i in range(12))
SATURATIONS = (0.33, 0.67, 1.0)
FACINGS = tuple(i * 45.0 for i in range(8))
PHASES = (0.0, 90.0, 180.0, 270.0)

#: family -> (curve parameter name, its unit, period in that unit (0: not circular))
FAMILIES = {"orientation": ("orientation", "deg", 180.0), "hue": ("hue", "deg", 360.0),
            "curve": ("facing", "deg", 360.0), "dots": ("spacing", "px", 0.0),
            "checkerboard": ("square", "px", 0.0)}


@dataclass(frozen=True)
class Stimulus:
    """One stimulus: its family, the curve parameter's value, the secondary parameter (period,
    saturation, radius; 0 when none) and the nuisance one averaged over (phase, polarity)."""

    family: str
    value: float
    secondary: float = 0.0
    nuisance: float = 0.0


def _scales(size: int, fractions: Sequence[float], low: float) -> tuple[float, ...]:
    return tuple(round(max(low, size * f), 2) for f in fractions)


def periods(size: int) -> tuple[float, ...]:
    """Grating periods (px) at an input size: 1/48 .. 1/6 of the image, at least 2.5 px."""
    return _scales(size, (1 / 48, 1 / 24, 1 / 12, 1 / 6), 2.5)


def radii(size: int) -> tuple[float, ...]:
    return _scales(size, (1 / 24, 1 / 12, 1 / 6), 2.0)


def spacings(size: int) -> tuple[float, ...]:
    """Dot spacings and checkerboard squares (px)."""
    return _scales(size, (1 / 32, 1 / 16, 1 / 8, 1 / 4), 2.0)


def stimulus_set(size: int, families: Sequence[str] = tuple(FAMILIES)) -> list[Stimulus]:
    """The stimuli of `families` at input size `size`, the blank first (a few hundred in all)."""
    out = [Stimulus("blank", 0.0)]
    for fam in families:
        if fam == "orientation":
            out += [Stimulus(fam, o, p, ph) for o in ORIENTATIONS for p in periods(size) for ph in PHASES]
        elif fam == "hue":
            out += [Stimulus(fam, h, s) for h in HUES for s in SATURATIONS]
        elif fam == "curve":
            out += [Stimulus(fam, f, r, pol) for f in FACINGS for r in radii(size) for pol in (1.0, -1.0)]
        elif fam == "dots":
            out += [Stimulus(fam, d, 0.0, pol) for d in spacings(size) for pol in (1.0, -1.0)]
        elif fam == "checkerboard":
            out += [Stimulus(fam, q, 0.0, ph) for q in spacings(size) for ph in (0.0, 1.0)]
        else:
            from ..errors import UserError

            raise UserError(f"unknown stimulus family {fam!r} (expected one of {', '.join(FAMILIES)})")
    return out


@functools.lru_cache(maxsize=4)
def _grid(size: int):
    """Centred pixel coordinates (y, x), float32; cached (read only)."""
    c = (size - 1) / 2
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float32) - c, torch.arange(size, dtype=torch.float32) - c,
                          indexing="ij")
    return y, x


def hsv_to_rgb(h: float, s: float, v: float = 1.0) -> tuple[float, float, float]:
    """HSV (hue in degrees) -> RGB in [0, 1]."""
    def f(n):
        k = (n + h / 60.0) % 6
        return v - v * s * max(0.0, min(k, 4 - k, 1.0))
    return f(5), f(3), f(1)


def render(stim: Stimulus, size: int) -> torch.Tensor:
    """3 x size x size float32 image of one stimulus."""
    y, x = _grid(size)
    if stim.family == "blank":
        lum = torch.full_like(x, 0.5)
    elif stim.family == "orientation":
        t = math.radians(stim.value)
        u = x * math.cos(t) + y * math.sin(t)
        lum = 0.5 + 0.5 * torch.cos(2 * math.pi * u / stim.secondary + math.radians(stim.nuisance))
    elif stim.family == "hue":
        rgb = torch.tensor(hsv_to_rgb(stim.value, stim.secondary), dtype=torch.float32)
        return rgb.view(3, 1, 1).expand(3, size, size).clone()
    elif stim.family == "curve":
        lum = 0.5 + 0.5 * stim.nuisance * _arcs(x, y, stim.value, stim.secondary, size)
    elif stim.family == "dots":
        d = stim.value
        cy, cx = torch.remainder(y, d) - d / 2, torch.remainder(x, d) - d / 2
        r = torch.sqrt(cy ** 2 + cx ** 2)
        m = (max(1.0, d / 4) + 0.5 - r).clamp(0, 1)   # anti-aliased disc of radius d/4
        lum = 0.5 + 0.5 * stim.nuisance * m
    elif stim.family == "checkerboard":
        q = stim.value
        cell = torch.floor((y + size) / q) + torch.floor((x + size) / q) + stim.nuisance
        lum = torch.remainder(cell, 2)
    else:
        raise ValueError(stim.family)
    return lum.float().clamp(0, 1).expand(3, size, size).clone()


def _arcs(x, y, facing: float, radius: float, size: int) -> torch.Tensor:
    """Tiled anti-aliased arcs (120 deg, convex side facing `facing`), values in [0, 1]."""
    cell = 3.0 * radius
    t = math.radians(facing)
    # each cell's circle centre sits behind the cell centre, so the arc's middle is central
    lx = torch.remainder(x + size, cell) - cell / 2 + 0.5 * radius * math.cos(t)
    ly = torch.remainder(y + size, cell) - cell / 2 + 0.5 * radius * math.sin(t)
    r = torch.sqrt(lx ** 2 + ly ** 2)
    ang = torch.atan2(ly, lx) - t
    ang = torch.remainder(ang + math.pi, 2 * math.pi) - math.pi
    width = max(1.0, size / 112)
    ring = (width - (r - radius).abs() + 0.5).clamp(0, 1)
    return ring * (ang.abs() <= math.radians(60)).float()


def batches(stimuli: Sequence[Stimulus], size: int, batch_size: int = 32) -> Iterator[torch.Tensor]:
    """N x 3 x size x size batches, rendered lazily (bounded memory)."""
    for i in range(0, len(stimuli), batch_size):
        yield torch.stack([render(s, size) for s in stimuli[i:i + batch_size]])
