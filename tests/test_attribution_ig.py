"""Integrated gradients on the real efficientnet_lite0 and real photos at 224 px: completeness."""

from __future__ import annotations

import pytest
import torch

from vizsuite.attribution import attribute
from vizsuite.images import find_images, load_batch

from .attribution_helpers import chelsea


def test_default_steps_complete_on_a_real_photo(effnet, photos_dir):
    """Default settings on a real photo (128 px keeps the default suite fast; 224 px: slow test)."""
    x = load_batch([photos_dir / "bird.png"], 128)
    res = attribute(effnet, x, target="top1", method="ig")
    assert res.params["steps"] == 256 and res.check.name == "completeness_delta"
    assert res.check.value < 0.01, res.check.detail


@pytest.mark.slow
def test_default_settings_complete_on_all_photos_at_224(effnet, photos_dir):
    """chelsea needs the automatic step doubling (2.3% at 256 steps, 0.45% at 512)."""
    x = torch.cat([chelsea(224), load_batch(find_images(photos_dir), 224)])
    res = attribute(effnet, x, target="top1", method="ig")
    assert res.check.value < 0.01, res.check.detail
    assert res.check.detail[0]["steps"] > 256


def test_fixed_steps_without_refinement_match_captum(effnet):
    """Same steps, same rule: captum's numbers. IG runs on a copy with batch norms folded, which
    is exact in float64 (checked to 1e-12); in float32 the rounding moves a few ReLU6 clipping
    decisions, so there the maps agree to 1e-3 (relative L2) instead."""
    import copy

    from captum.attr import IntegratedGradients

    e64 = copy.deepcopy(effnet).double()
    for model, x, tol in ((e64, chelsea(96).double(), 1e-12), (effnet, chelsea(96), 1e-3)):
        res = attribute(model, x, target=281, method="ig", steps=16, max_delta=None)
        ref, delta = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=281, n_steps=16, internal_batch_size=16,
            return_convergence_delta=True)
        assert res.attribution.dtype == x.dtype
        assert ((res.attribution - ref).norm() / ref.norm()).item() < tol
        assert abs(res.check.detail[0]["delta"] - delta.item()) < 1e-3 * abs(res.check.detail[0]["difference"])
