"""Dataset-example overlays: the unit's activation map lands where the unit fired in the crop."""

from __future__ import annotations

import numpy as np

from vizsuite.analysis.examples import activation_overlay, crop_field
from vizsuite.analysis.receptive import ReceptiveField


def _peak(rgba: np.ndarray) -> tuple[int, int]:
    a = rgba[..., 3].astype(float)
    ys, xs = np.nonzero(a == a.max())
    return int(round(ys.mean())), int(round(xs.mean()))


def test_overlay_peaks_at_the_position_that_fired():
    rf = ReceptiveField(size=9, jump=4, offset=2.0)  # a position's centre pixel: 2 + 4 * index
    amap = np.zeros((8, 8))
    amap[3, 5] = 2.0
    over = activation_overlay(amap, rf, 3, 5, image_size=32, out_px=9)  # the crop around the max: 1 px = 1 px
    assert over.shape == (9, 9, 4) and over[..., 3].max() == 230
    assert _peak(over) == (4, 4)  # the crop's centre
    # the crop of the position to its left: the hot spot sits one jump (4 px) right of the centre
    assert _peak(activation_overlay(amap, rf, 3, 4, image_size=32, out_px=9)) == (4, 8)
    # negative examples: coloured by the negated map, blue
    neg = activation_overlay(-amap, rf, 3, 5, 32, 9, sign=-1.0)
    assert _peak(neg) == (4, 4) and tuple(neg[4, 4, :3]) == (29, 78, 216)


def test_overlay_matches_the_crop_geometry_off_the_image():
    rf = ReceptiveField(size=16, jump=8, offset=3.5)
    amap = np.ones((4, 4))
    over = activation_overlay(amap, rf, 0, 0, image_size=32, out_px=16)  # 1 crop px = 1 image px
    crop = crop_field(np.ones((32, 32, 3), np.float32), rf, 0, 0, 16)
    grey = (crop[..., 0] == 128)  # crop_field pads outside the image with grey
    # outside the map (and the image) the overlay is transparent; inside it is opaque
    assert over[grey, 3].max() == 0 and over[~grey, 3].min() > 0
