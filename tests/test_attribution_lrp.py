"""LRP ground truths: identities on small nets, conservation, agreement with zennit on real models."""

from __future__ import annotations

import pytest
import torch
from zennit import composites as zc

from vizsuite.attribution import attribute
from vizsuite.attribution.canonizers import canonizers_for
from vizsuite.attribution.lrp import extra_layer_map
from vizsuite.errors import UserError

from .attribution_helpers import bn_net, chelsea, randomize_bn, relu_net, snapshot, assert_same, wrap


def _x(n=2, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_lrp0_equals_gradient_x_input_on_relu_net():
    model = wrap(relu_net())
    x = _x()
    lrp = attribute(model, x, target=[1, 3], method="lrp", composite="custom:*=zero")
    gxi = attribute(model, x, target=[1, 3], method="gxi")
    scale = gxi.attribution.abs().max()
    assert torch.allclose(lrp.attribution, gxi.attribution, atol=1e-4 * scale, rtol=0)
    assert lrp.attribution.abs().sum() > 0


def test_conservation_on_bias_free_bn_net():
    model = wrap(bn_net())
    x = _x(3)
    for composite in ("epsilon_plus_flat", "epsilon_alpha2_beta1", "custom:*=epsilon"):
        res = attribute(model, x, target="top1", method="lrp", composite=composite)
        sums = res.attribution.double().flatten(1).sum(1)
        assert torch.allclose(sums, res.scores.double(), rtol=1e-4, atol=0), (composite, sums, res.scores)
        assert res.check.name == "conservation" and abs(res.check.value - 1) < 1e-4


def test_batchnorm_is_merged_not_passed():
    """With BN merged, LRP-0 equals gradient x input; passing relevance through BN would not."""
    model = wrap(bn_net(zero_shift=False)).double()  # float64: the identity is exact up to rounding
    x = _x(1)
    lrp = attribute(model, x, target=2, method="lrp", composite="custom:*=zero", stabilizer=1e-12)
    gxi = attribute(model, x, target=2, method="gxi")
    assert torch.allclose(lrp.attribution, gxi.attribution, atol=1e-8 * gxi.attribution.abs().max())
    raw = attribute(model, x, target=2, method="lrp", composite="custom:*=zero", stabilizer=1e-12, canonizers=[])
    assert not torch.allclose(raw.attribution, gxi.attribution, atol=1e-3 * gxi.attribution.abs().max())


def test_topk_is_one_forward_and_matches_single_targets():
    model = wrap(relu_net())
    x = _x(2)
    attribute(model, x[:1], target=0, method="lrp")  # first use also verifies the canonizers
    calls = []
    h = model.net[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        top = attribute(model, x, target="top3", method="lrp")
    finally:
        h.remove()
    assert len(calls) == 1  # one forward for all k classes
    assert len(top) == 6 and [t.rank for t in top.targets] == [1, 2, 3, 1, 2, 3]
    for r, t in enumerate(top.targets):
        single = attribute(model, x[t.image:t.image + 1], target=t.index, method="lrp")
        assert torch.allclose(top.attribution[r], single.attribution[0], atol=1e-6)


def test_unit_target_conserves_unit_value():
    model = wrap(bn_net())
    x = _x(2)
    res = attribute(model, x, target="3:5", method="lrp")  # layer '3' (second conv), channel 5 mean
    assert res.targets[0].kind == "unit"
    sums = res.attribution.double().flatten(1).sum(1)
    assert torch.allclose(sums, res.scores.double(), rtol=1e-4)
    neuron = attribute(model, x, target="3:5@4,7", method="lrp")
    assert torch.allclose(neuron.attribution.double().flatten(1).sum(1), neuron.scores.double(), rtol=1e-4)


@pytest.mark.parametrize("target,match", [("3:99", "out of range"), ("nope:1", "did not run|unknown"),
                                          ("zebra", "unknown class label"), (17, "out of range")])
def test_bad_targets_leave_nothing_behind(target, match):
    model = wrap(bn_net())
    before = snapshot(model)
    with pytest.raises(UserError, match=match):
        attribute(model, _x(1), target=target, method="lrp")
    assert_same(before, snapshot(model))


def test_unknown_composite_and_rule():
    model = wrap(relu_net())
    with pytest.raises(UserError, match="unknown LRP composite"):
        attribute(model, _x(1), method="lrp", composite="epsilon_magic")
    with pytest.raises(UserError, match="unknown LRP rule"):
        attribute(model, _x(1), method="lrp", composite="custom:*=magic")
    with pytest.raises(UserError, match="matches no layer"):
        attribute(model, _x(1), method="lrp", composite="custom:blocks.*=epsilon")


# ---------------------------------------------------------------- agreement with zennit

def _zennit_reference(model, x, composite_name, canonizers, target):
    """zennit used directly (its Gradient attributor) on the network with normalized input."""
    from zennit.attribution import Gradient

    net = model.net
    z = model.normalize(x).detach()
    kwargs = {"layer_map": extra_layer_map(), "canonizers": canonizers}
    if composite_name == "epsilon_gamma_box":
        low, high = (0 - model.mean) / model.std, (1 - model.mean) / model.std
        kwargs.update(low=low, high=high)  # per channel: zennit broadcasts
    composite = {"epsilon_plus_flat": zc.EpsilonPlusFlat, "epsilon_gamma_box": zc.EpsilonGammaBox,
                 "epsilon_alpha2_beta1": zc.EpsilonAlpha2Beta1}[composite_name](**kwargs)
    with Gradient(model=net, composite=composite) as attributor:
        _, rel = attributor(z, lambda out: torch.eye(out.shape[1])[[target]] * out)
    return rel


_CACHE: dict = {}


def _model(name, request):
    """Models for the agreement tests, loaded once per session (googlenet init alone takes seconds)."""
    from vizsuite.zoo import load_model

    if name == "mobilenet_v2":
        return request.getfixturevalue("mobilenet_v2"), 96
    if name not in _CACHE:
        if name == "efficientnet_lite0":
            _CACHE[name] = (request.getfixturevalue("effnet"), 96)
        elif name == "inceptionv1":
            _CACHE[name] = (load_model("inceptionv1", random_weights=True), 224)  # its pools need 224
        else:
            m = load_model({"resnet50": "torchvision:resnet50", "googlenet": "googlenet"}[name], random_weights=True)
            randomize_bn(m.net)  # random-weight batch norms are identities: make the merge matter
            _CACHE[name] = (m, 64)
    return _CACHE[name]


MODELS = ["efficientnet_lite0", "mobilenet_v2", "resnet50", "googlenet", "inceptionv1"]
CASES = ([(m, "epsilon_plus_flat") for m in MODELS]
         + [("inceptionv1", "epsilon_gamma_box")]   # box bounds on a first layer fed a padded input
         + [pytest.param(m, c, marks=pytest.mark.slow) for m in MODELS[:4]
            for c in ("epsilon_gamma_box", "epsilon_alpha2_beta1")]
         + [pytest.param("inceptionv1", "epsilon_alpha2_beta1", marks=pytest.mark.slow)])


@pytest.mark.parametrize("name,composite", CASES)
def test_matches_zennit(name, composite, request):
    model, size = _model(name, request)
    x = chelsea(size)
    ours = attribute(model, x, target="top1", method="lrp", composite=composite)
    target = ours.targets[0].index
    before = snapshot(model)
    if name == "resnet50":
        # zennit's own ResNet canonizer (it leaves BN eps in place: differences of order 1e-5)
        from zennit.torchvision import ResNetCanonizer
        ref = _zennit_reference(model, x, composite, [ResNetCanonizer()], target)
        tol = 2e-3
    else:
        ref = _zennit_reference(model, x, composite, canonizers_for(model.net), target)
        tol = 1e-5
    assert_same(before, snapshot(model))
    scale = ref.abs().max()
    assert scale > 0
    assert (ours.attribution - ref).abs().max() <= tol * scale, (ours.attribution - ref).abs().max() / scale
