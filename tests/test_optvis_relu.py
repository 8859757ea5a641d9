"""Redirected ReLU gradients (Lucid's rule): exact wherever gradient flows, redirected where it dies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vizsuite.optvis import channel, evaluate, render
from vizsuite.optvis.relu import LEAK, RedirectedReLU, redirect_relus


def _grad(module, x, g):
    x = x.clone().requires_grad_()
    (out,) = torch.autograd.grad(module(x), x, g)
    return out


def test_exact_gradient_wherever_any_gradient_flows():
    torch.manual_seed(0)
    x = 4 * torch.randn(3, 5, 7, 7, dtype=torch.float64)
    g = torch.randn_like(x)
    for ref, ours in ((nn.ReLU(), RedirectedReLU(0.0)), (nn.ReLU6(), RedirectedReLU(0.0, 6.0))):
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
        torch.testing.assert_close(_grad(ours, x, g), _grad(ref, x, g), rtol=0, atol=0)


def test_an_image_whose_gradient_dies_gets_it_redirected_towards_the_active_range():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    x[1] = -x[1].abs() - 0.1            # image 1: every ReLU input negative, nothing gets through
    x[1, 0, 0, :3] = 7.0                # ... for ReLU6 also some above the ceiling
    g = torch.randn_like(x)
    relu6 = RedirectedReLU(0.0, 6.0)
    got = _grad(relu6, x, g)
    torch.testing.assert_close(got[0], _grad(nn.ReLU6(), x, g)[0], rtol=0, atol=0)  # image 0: exact
    # image 1: the incoming gradient, except where descent would push an input further out of range
    push = ((x[1] < 0) & (g[1] > 0)) | ((x[1] > 6) & (g[1] < 0))
    torch.testing.assert_close(got[1], g[1].masked_fill(push, 0), rtol=0, atol=0)
    assert got[1].abs().sum() > 0 and _grad(nn.ReLU6(), x, g)[1].abs().sum() == 0


def test_redirect_relus_replaces_plain_relus_only():
    class MyReLU(nn.ReLU):  # a subclass may compute something else: left alone
        def forward(self, x):
            return super().forward(x) * 2

    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(inplace=True), nn.Sequential(nn.ReLU6(), MyReLU()),
                        nn.Hardtanh(-1.0, 1.0))
    assert redirect_relus(net) == 2
    assert isinstance(net[1], RedirectedReLU) and isinstance(net[2][0], RedirectedReLU)
    assert net[2][0].hi == 6.0 and type(net[2][1]) is MyReLU and type(net[3]) is nn.Hardtanh


def _dead_unit_model():
    """One unit, relu(r + g + b - 2.4): dead on any image darker than 0.8 on average (the grey
    start is 0.5), alive on brighter ones; exact gradients can never start it."""
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-2.4)
    return nn.Sequential(conv, nn.ReLU())


def test_render_wakes_a_dead_unit_and_leaves_the_callers_model_alone():
    model = _dead_unit_model()
    kw = dict(size=32, steps=60, seed=0, progress=False, transforms="none")
    exact = render(model, channel("1", 0), relu_grad="exact", **kw)
    redirected = render(model, channel("1", 0), **kw)
    start = render(model, channel("1", 0), relu_grad="exact", **{**kw, "steps": 1}).images
    assert torch.equal(exact.images, start)  # no gradient ever: the image never moved
    assert evaluate(model, channel("1", 0), exact.images).item() == 0
    assert evaluate(model, channel("1", 0), redirected.images).item() > 0.01  # it fires
    assert type(model[1]) is nn.ReLU  # only the render's private copy was changed


def test_leaky_rule_is_torch_lucents():
    """lucent's RedirectedReLU: grad where the input is positive, 0.1 x grad where negative."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    g = torch.randn_like(x)
    got = _grad(RedirectedReLU(0.0, None, "leaky"), x, g)
    torch.testing.assert_close(got, torch.where(x < 0, LEAK * g, g), rtol=0, atol=0)
    x6 = 8 * x
    got6 = _grad(RedirectedReLU(0.0, 6.0, "leaky"), x6, g)
    torch.testing.assert_close(got6, torch.where((x6 < 0) | (x6 > 6), LEAK * g, g), rtol=0, atol=0)


def test_default_rule_comes_from_the_model_card(tmp_path):
    from vizsuite.errors import UserError
    from vizsuite.optvis.render import default_relu_grad
    from vizsuite.zoo import load_model

    assert default_relu_grad(load_model("inceptionv1", random_weights=True)) == "leaky"
    assert default_relu_grad(load_model("efficientnet_lite0", random_weights=True)) == "redirect"
    assert default_relu_grad(_dead_unit_model()) == "redirect"  # a plain module has no card
    with pytest.raises(UserError, match="relu_grad"):
        render(_dead_unit_model(), channel("1", 0), relu_grad="sometimes", steps=1, progress=False)
