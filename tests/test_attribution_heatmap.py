"""Heatmap colours and overlays (torch-free helpers)."""

from __future__ import annotations

import numpy as np

from vizsuite.attribution.heatmap import colorize, colour_bar, overlay, symmetric_scale, to_map


def test_diverging_symmetric_colours():
    heat = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])
    rgb = colorize(heat, scale=2.0)
    assert tuple(rgb[0, 2]) == (255, 255, 255)           # zero is white
    assert rgb[0, 4, 0] > 200 and rgb[0, 4, 2] < 50         # positive red
    assert rgb[0, 0, 2] > 200 and rgb[0, 0, 0] < 50         # negative blue
    assert abs(int(rgb[0, 3, 1]) - int(rgb[0, 1, 1])) <= 1  # symmetric: same strength both sides


def test_scale_overlay_and_bar():
    heat = np.zeros((40, 40))
    heat[1:, 1:] = 1.0
    heat[0, 0] = 1000.0   # one hot pixel must not wash out the rest
    assert symmetric_scale(heat) < 2
    photo = np.full((40, 40, 3), 128, np.uint8)
    out = overlay(photo, heat)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert out[4, 4, 0] > out[4, 4, 2]
    assert to_map(np.ones((3, 4, 5))).shape == (4, 5)
    assert colour_bar(32, 4).shape == (4, 32, 3)
    assert tuple(colorize(np.zeros((2, 2)))[0, 0]) == (255, 255, 255)
