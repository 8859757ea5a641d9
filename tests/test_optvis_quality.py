"""Slow: rendered images beat real photos on their own units (a light benchmarks/optvis_quality.py).

Runs with `pytest -m slow` (or VIZSUITE_SLOW=1); the default suite skips it to stay fast.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

UNITS = [("blocks.2", 1), ("blocks.2", 9), ("blocks.3", 17), ("blocks.4", 23)]


@pytest.fixture(autouse=True)
def _only_when_asked(request):
    expr = request.config.getoption("-m") or ""
    if "slow" not in expr.replace("not slow", "") and not os.environ.get("VIZSUITE_SLOW"):
        pytest.skip("slow: run with -m slow or VIZSUITE_SLOW=1")


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_rendered_units_beat_every_photo(effnet, photos_dir, precision):
    """In the default precision (on efficientnet_lite0: fp32, its depthwise convolutions keep
    "auto" there), in the fp32 reference and in bf16."""
    from skimage import data

    from vizsuite.images import find_images, load_batch, resize_center_crop, to_array
    from vizsuite.optvis import channel, evaluate, render

    photos = load_batch(find_images(photos_dir), 224, effnet.spec.crop_pct)
    cat = resize_center_crop(Image.fromarray(np.asarray(data.chelsea())), 224, effnet.spec.crop_pct)
    photos = torch.cat([photos, torch.from_numpy(to_array(cat)).permute(2, 0, 1)[None]])
    objective = [channel(layer, c) for layer, c in UNITS]
    result = render(effnet, objective, steps=64, seed=0, progress=False, precision=precision)
    rendered = evaluate(effnet, objective, result.images)
    for i, (layer, c) in enumerate(UNITS):
        best_photo = evaluate(effnet, channel(layer, c), photos).max()
        assert rendered[i] > best_photo, (layer, c, float(rendered[i]), float(best_photo))
