"""render(): ground truth on oriented filters, determinism, truncation, frozen weights, alpha."""

from __future__ import annotations

import pytest
import torch

from vizsuite.errors import UserError
from vizsuite.optvis import (ImageParam, channel, class_logit, evaluate, l1, layer, neuron, per_image,
                             render)

from .optvis_helpers import ORIENTATIONS, angle_diff, dominant_orientation, oriented_cnn, tiny_cnn


def test_oriented_filters_each_channel_shows_its_orientation():
    """Every Gabor channel's visualization has its dominant spectral orientation within 11.25
    degrees (half the spacing) of the filter's, all 8 rendered in one batch."""
    model = oriented_cnn(48)
    result = render(model, [channel("pool", k) for k in range(8)], steps=40, progress=False, seed=0)
    found = [dominant_orientation(img) for img in result.images]
    errors = [angle_diff(f, o) for f, o in zip(found, ORIENTATIONS)]
    assert max(errors) < 11.25, list(zip(ORIENTATIONS, found))
    # and the optimization really raised each unit above a grey image's response
    grey = torch.full((8, 3, 48, 48), 0.5)
    objective = [channel("pool", k) for k in range(8)]
    assert (evaluate(model, objective, result.images) > evaluate(model, objective, grey) + 0.01).all()


def test_same_seed_same_pixels_other_seed_differs():
    model = tiny_cnn()
    kw = dict(steps=5, progress=False, thresholds=(2,))
    a = render(model, channel("conv2", 3), seed=11, **kw)
    b = render(model, channel("conv2", 3), seed=11, **kw)
    c = render(model, channel("conv2", 3), seed=12, **kw)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.snapshots[2], b.snapshots[2])
    assert not torch.equal(a.images, c.images)


def test_same_seed_same_pixels_on_efficientnet(effnet):
    kw = dict(steps=3, size=48, progress=False, seed=4)
    a = render(effnet, channel("blocks.1", 2), **kw)
    b = render(effnet, channel("blocks.1", 2), **kw)
    assert torch.equal(a.images, b.images)


def test_result_thresholds_values_and_timing():
    model = tiny_cnn()
    r = render(model, [channel("conv2", 1), channel("conv2", 2)], steps=6, thresholds=(2, 4, 99),
               progress=False)
    assert r.images.shape == (2, 3, 32, 32)
    assert sorted(r.values) == [2, 4, 6] and sorted(r.snapshots) == [2, 4, 6]
    assert r.values[6].shape == (2,)
    assert r.seconds > 0 and r.steps == 6
    assert r.objective == 'per_image([channel("conv2", 1), channel("conv2", 2)])'
    assert r.values[6][1] > r.values[2][1]  # it optimizes


def _count_calls(model, names):
    calls = {n: 0 for n in names}
    handles = []
    for n in names:
        def hook(mod, inp, out, n=n):
            calls[n] += 1
        handles.append(model.layer(n).register_forward_hook(hook))
    return calls, handles


def test_forward_is_truncated_at_the_deepest_layer(effnet):
    calls, handles = _count_calls(effnet, ["blocks.1", "blocks.2", "blocks.3", "classifier"])
    try:
        render(effnet, channel("blocks.1", 0) + 0.5 * neuron("blocks.2", 1), steps=2, size=32, progress=False)
        assert calls == {"blocks.1": 2, "blocks.2": 2, "blocks.3": 0, "classifier": 0}
        render(effnet, class_logit(1), steps=1, size=32, progress=False, transforms="none")
        assert calls["classifier"] == 1
    finally:
        for h in handles:
            h.remove()
    # render leaves no hooks behind on the user's modules
    assert all(not m._forward_hooks for m in effnet.modules())


def test_weights_get_no_gradient_and_model_mode_is_restored():
    model = tiny_cnn(requires_grad=True)  # a user model that was not frozen
    model.train()
    render(model, layer("relu2") - 0.1 * l1(), steps=3, progress=False)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # render used eval mode and restored the caller's mode


def test_alpha_render_and_custom_param():
    model = tiny_cnn()
    param = ImageParam(24, 2, alpha=True, generator=torch.Generator().manual_seed(0))
    r = render(model, channel("conv2", 0), param=param, steps=3, progress=False)
    assert r.images.shape == (2, 4, 24, 24)
    assert r.rgb().shape == (2, 3, 24, 24)


def test_pixel_param_and_bad_arguments():
    model = tiny_cnn()
    r = render(model, channel("conv1", 0), steps=2, fft=False, decorrelate=False, progress=False,
               transforms="none", optimizer="sgd", lr=0.1)
    assert r.images.shape == (1, 3, 32, 32)
    with pytest.raises(UserError):
        render(model, channel("conv1", 0), steps=0, progress=False)
    with pytest.raises(UserError):
        render(model, channel("nope", 0), steps=1, progress=False)
    with pytest.raises(UserError):
        render(model, channel("conv1", 0), steps=1, optimizer="lbfgs2", progress=False)
    with pytest.raises(UserError):
        render(model, [channel("conv1", 0)] * 2, batch=3, steps=1, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_render_matches_itself():
    model = tiny_cnn().to("cuda")
    a = render(model, channel("conv2", 1), steps=3, device="cuda", progress=False)
    b = render(model, channel("conv2", 1), steps=3, device="cuda", progress=False)
    assert torch.equal(a.images, b.images)


def test_optvis_does_not_import_attribution():
    import subprocess
    import sys

    code = ("import sys, vizsuite.optvis, vizsuite.cli.render; "
            "bad = [m for m in sys.modules if m.startswith('vizsuite.attribution')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
