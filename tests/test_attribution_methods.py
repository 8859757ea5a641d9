"""The contract and every method: shapes, targets, region ground truth, options, bad input."""

from __future__ import annotations

import pytest
import torch

from vizsuite.attribution import METHODS, attribute, make_baseline
from vizsuite.errors import UserError

from .attribution_helpers import RegionNet, region_fraction, relu_net, wrap

LO, HI = 10, 22
REGION_CASES = [
    ("saliency", {}), ("gradient_x_input", {}), ("integrated_gradients", {"steps": 32}),
    ("integrated_gradients", {"steps": 32, "baseline": "blur"}),
    ("integrated_gradients", {"steps": 32, "baseline": "noise"}),
    ("smoothgrad", {"samples": 8}), ("smoothgrad", {"base": "lrp", "samples": 4}),
    ("lrp", {"composite": "epsilon_plus_flat"}), ("lrp", {"composite": "epsilon_gamma_box"}),
    ("lrp", {"composite": "epsilon_alpha2_beta1"}), ("lrp", {"composite": "custom:conv1=flat,*=epsilon"}),
]


@pytest.mark.parametrize("method,options", REGION_CASES)
def test_attribution_stays_in_the_only_region_that_matters(method, options):
    model = wrap(RegionNet(lo=LO, hi=HI))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    res = attribute(model, x, target="top1", method=method, **options)
    assert res.attribution.shape == (1, 3, 32, 32)
    assert res.attribution.abs().sum() > 0
    assert region_fraction(res.attribution, LO, HI) >= 0.95


def test_gradcam_shape_and_layer():
    model = wrap(RegionNet())
    res = attribute(model, torch.rand(2, 3, 32, 32), target="top1", method="gradcam")
    assert res.attribution.shape == (2, 3, 32, 32) and res.params["layer"] == "relu2"
    assert (res.attribution >= 0).all()
    res = attribute(model, torch.rand(1, 3, 32, 32), target=1, method="grad_cam", layer="conv1")
    assert res.params["layer"] == "conv1"


def test_contract_fields():
    model = wrap(relu_net())
    x = torch.rand(2, 3, 32, 32)
    res = attribute(model, x, target="top2", method="ig", steps=16)
    assert res.method == "integrated_gradients" and res.params["steps"] == 16
    assert res.output.shape == (2, 4) and len(res) == 4
    assert [(t.image, t.rank) for t in res.targets] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    top = res.output.topk(2, dim=1).indices
    assert [t.index for t in res.targets] == top.flatten().tolist()
    assert torch.allclose(res.scores, torch.stack([res.output[t.image, t.index] for t in res.targets]))
    assert res.check.name == "completeness_delta" and len(res.check.values) == 4
    assert res.rows_for(1) == [2, 3] and res.heatmap(0).shape == (32, 32)
    single = attribute(model, x[0], target="class 1", method="saliency")  # C x H x W input, label target
    assert single.attribution.shape == (1, 3, 32, 32) and single.targets[0].index == 1


@pytest.mark.parametrize("method", METHODS)
def test_unit_targets_for_every_method(method):
    model = wrap(relu_net())
    x = torch.rand(2, 3, 32, 32)
    opts = {"steps": 8} if method == "integrated_gradients" else {"samples": 2} if method == "smoothgrad" else {}
    res = attribute(model, x, target="3:2", method=method, **opts)
    assert res.attribution.shape == (2, 3, 32, 32) and res.targets[0].kind == "unit"
    res = attribute(model, x, target="3:2@4,5", method=method, **opts)
    assert res.targets[0].unit.y == 4


def test_ig_completeness_on_small_net_and_baselines():
    model = wrap(relu_net())
    x = torch.rand(1, 3, 32, 32)
    res = attribute(model, x, target=0, method="ig", steps=128)
    assert res.check.value < 0.01
    g = torch.Generator().manual_seed(0)
    assert torch.equal(make_baseline("noise", x, generator=g), make_baseline("noise", x, generator=torch.Generator().manual_seed(0)))
    blur = make_baseline("blur", x)
    assert blur.shape == x.shape and blur.std() < x.std()
    assert make_baseline("black", x).abs().sum() == 0


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "magic"}, "unknown attribution method"),
    ({"method": "ig", "stepz": 3}, "unknown option"),
    ({"method": "lrp", "composite": "nope"}, "unknown LRP composite"),
    ({"method": "ig", "baseline": "purple"}, "unknown IG baseline"),
    ({"method": "gradcam", "layer": "conv9"}, "unknown Grad-CAM layer"),
    ({"method": "saliency", "target": "top0"}, "at least 1"),
    ({"method": "saliency", "target": 99}, "out of range"),
    ({"method": "saliency", "target": "no such class"}, "unknown class label"),
    ({"method": "saliency", "target": [1, 2, 3]}, "3 targets given for 2 images"),
    ({"method": "smoothgrad", "base": "smoothgrad"}, "cannot wrap itself"),
])
def test_bad_input_is_a_user_error(kwargs, match):
    model = wrap(relu_net())
    kwargs = dict(kwargs)
    target = kwargs.pop("target", "top1")
    with pytest.raises(UserError, match=match):
        attribute(model, torch.rand(2, 3, 32, 32), target=target, **kwargs)


def test_smoothgrad_is_seeded():
    model = wrap(relu_net())
    x = torch.rand(1, 3, 32, 32)
    a = attribute(model, x, method="sg", samples=4, seed=1).attribution
    b = attribute(model, x, method="sg", samples=4, seed=1).attribution
    c = attribute(model, x, method="sg", samples=4, seed=2).attribution
    assert torch.equal(a, b) and not torch.equal(a, c)
