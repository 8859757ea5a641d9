"""Attribution maps as pictures (torch-free: numpy in, uint8 RGB out).

Diverging colours on a symmetric scale: positive evidence red, negative blue, zero white, so
the same colour means the same amount on both sides.
"""

from __future__ import annotations

import numpy as np


def to_map(attribution) -> np.ndarray:
    """C x H x W (or H x W) attribution -> H x W float map (summed over channels)."""
    arr = np.asarray(attribution, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.sum(0)
    if arr.ndim != 2:
        raise ValueError(f"expected C x H x W or H x W, got shape {arr.shape}")
    return arr


def symmetric_scale(heat: np.ndarray, percentile: float = 99.5) -> float:
    """The value mapped to full colour: a high percentile of |map| (one hot pixel must not wash out the rest)."""
    mag = np.abs(heat[np.isfinite(heat)])
    if mag.size == 0:
        return 1.0
    scale = float(np.percentile(mag, percentile))
    if scale <= 0:
        scale = float(mag.max())
    return scale if scale > 0 else 1.0


def colorize(heat: np.ndarray, scale: float | None = None) -> np.ndarray:
    """H x W map -> H x W x 3 uint8: blue (negative) - white (0) - red (positive), clipped at +-scale."""
    heat = to_map(heat)
    scale = symmetric_scale(heat) if scale is None else float(scale)
    v = np.clip(np.nan_to_num(heat / scale), -1.0, 1.0)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos], axis=-1)
    # deepen the far ends a little (pure red/blue read better than the washed 'bwr' ends)
    rgb[..., 0] -= 0.3 * neg
    rgb[..., 2] -= 0.3 * pos
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def overlay(photo: np.ndarray, heat: np.ndarray, scale: float | None = None, strength: float = 0.85) -> np.ndarray:
    """The heatmap over a dimmed grey copy of the photo; opacity grows with |attribution|.

    photo: H x W x 3 uint8 (or float in [0, 1]) of the same size as the map.
    """
    heat = to_map(heat)
    scale = symmetric_scale(heat) if scale is None else float(scale)
    img = np.asarray(photo)
    img = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    if img.shape[:2] != heat.shape:
        raise ValueError(f"photo {img.shape[:2]} and map {heat.shape} differ in size")
    grey = img[..., :3] @ np.array([0.299, 0.587, 0.114])
    base = np.repeat((0.25 + 0.6 * grey)[..., None], 3, axis=-1)
    colour = colorize(heat, scale).astype(np.float64) / 255.0
    alpha = (strength * np.clip(np.abs(heat) / scale, 0, 1))[..., None]
    out = base * (1 - alpha) + colour * alpha
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def colour_bar(width: int = 256, height: int = 12) -> np.ndarray:
    """A horizontal legend: -scale (blue) .. 0 (white) .. +scale (red)."""
    ramp = np.linspace(-1.0, 1.0, width)[None, :].repeat(height, 0)
    return colorize(ramp, 1.0)
