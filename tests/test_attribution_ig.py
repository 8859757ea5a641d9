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
    from captum.attr import IntegratedGradients

    x = chelsea(96)
    res = attribute(effnet, x, target=281, method="ig", steps=16, max_delta=None)
    ref, delta = IntegratedGradients(effnet).attribute(x, baselines=torch.zeros_like(x), target=281, n_steps=16,
                                                        internal_batch_size=16, return_convergence_delta=True)
    assert torch.allclose(res.attribution, ref, atol=1e-6 * ref.abs().max().item() + 1e-9)
    assert abs(res.check.detail[0]["delta"] - delta.item()) < 1e-3 * abs(res.check.detail[0]["difference"])
