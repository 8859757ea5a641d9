"""Canonizers: outputs unchanged, nothing left behind (also after errors), blocks found."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vizsuite.attribution import attribute
from vizsuite.attribution.canonizers import (ConcatCanonizer, MergeBatchNorm, ResidualCanonizer,
                                             canonized, canonizers_for)
from vizsuite.errors import UserError

from .attribution_helpers import assert_same, bn_net, randomize_bn, snapshot, wrap

_NETS: dict = {}


def _net(name, request):
    """(network, input size, expected counts {canonizer class: applied instances})."""
    from vizsuite.zoo import load_model

    if name == "mobilenet_v2":
        return request.getfixturevalue("mobilenet_v2").net, 96
    if name not in _NETS:
        if name == "efficientnet_lite0":
            _NETS[name] = (request.getfixturevalue("effnet").net, 96)
        elif name == "inceptionv1":
            _NETS[name] = (load_model("inceptionv1", random_weights=True).net, 224)
        else:
            arch = {"resnet50": "torchvision:resnet50", "googlenet": "googlenet",
                    "mobilenet_v3": "torchvision:mobilenet_v3_small", "resnet18": "torchvision:resnet18"}[name]
            net = load_model(arch, random_weights=True).net
            randomize_bn(net)
            _NETS[name] = (net, 64)
    return _NETS[name]


# expected number of merges / residual sums / concat modules per model
EXPECTED = {
    "efficientnet_lite0": (49, 9, 0),   # every conv has its BN; 9 blocks with a skip
    "mobilenet_v2": (52, 10, 0),
    "resnet50": (53, 16, 0),
    "googlenet": (59, 0, 9),            # 57 BasicConv2d in the main path + 2 in the aux heads
    "inceptionv1": (0, 0, 0),           # no batch norm, no residual; its joins already are Concat modules
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_outputs_unchanged_and_clean_afterwards(name, request):
    net, size = _net(name, request)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    before = snapshot(net)
    counts = {}
    for c in canonizers_for(net):  # what each kind finds (applied and removed again)
        found = c.apply(net)
        counts[type(c).__name__] = len(found)
        for f in reversed(found):
            f.remove()
    assert_same(before, snapshot(net))
    with torch.no_grad():
        ref = net(x)
        with canonized(net, canonizers_for(net)) as canon:
            out = canon(x)
    assert_same(before, snapshot(net))
    scale = max(1.0, ref.abs().max().item())
    assert (out - ref).abs().max().item() <= 1e-5 * scale
    merges, sums, concats = EXPECTED[name]
    assert counts["MergeBatchNorm"] == merges
    assert counts["ResidualCanonizer"] == sums
    assert counts["ConcatCanonizer"] == concats


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50", "googlenet"])
def test_sum_and_concat_modules_are_visible_while_applied(name, request):
    net, size = _net(name, request)
    with canonized(net, canonizers_for(net)):
        names = [n for n, _ in net.named_modules()]
    assert any(n.endswith("canonizer_sum") for n in names) or any(n.endswith("canonizer_concat") for n in names)
    assert not any("canonizer_" in n for n, _ in net.named_modules())


def test_other_torchvision_blocks():
    from vizsuite.zoo import load_model

    for arch in ("torchvision:mobilenet_v3_small", "torchvision:resnet18"):
        net = load_model(arch, random_weights=True).net
        randomize_bn(net)
        x = torch.rand(1, 3, 64, 64)
        before = snapshot(net)
        with torch.no_grad():
            ref = net(x)
            with canonized(net, canonizers_for(net)):
                out = net(x)
        assert_same(before, snapshot(net))
        assert (out - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item())


def test_removed_after_exception_in_block():
    net = bn_net(zero_shift=False)
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="boom"):
        with canonized(net, canonizers_for(net)):
            assert net[1].eps == 0.0  # merged while inside
            raise RuntimeError("boom")
    assert_same(before, snapshot(net))


def test_partial_apply_is_undone(monkeypatch):
    """A canonizer failing half-way (second BN) undoes the merges it had already made."""
    net = bn_net(zero_shift=False)
    before = snapshot(net)
    calls = {"n": 0}
    original = MergeBatchNorm.register

    def flaky(self, linears, bn):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("flaky")
        return original(self, linears, bn)

    monkeypatch.setattr(MergeBatchNorm, "register", flaky)
    with pytest.raises(RuntimeError, match="flaky"):
        with canonized(net, canonizers_for(net)):
            pass
    assert_same(before, snapshot(net))


def test_lrp_error_mid_pass_leaves_model_clean(effnet):
    before = snapshot(effnet)
    with pytest.raises(UserError):
        attribute(effnet, torch.rand(1, 3, 64, 64), target="blocks.3:9999", method="lrp")
    with pytest.raises(UserError):
        attribute(effnet, torch.rand(1, 3, 64, 64), target=5000, method="lrp")
    assert_same(before, snapshot(effnet))


def test_misordered_model_is_refused():
    """A model registering a BN before the conv it follows would be merged wrongly: refused."""

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)   # registered right after `a`, but applied after `b`
            self.b = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.bn(self.b(self.a(x))).mean((2, 3)))

    net = Odd().eval()
    randomize_bn(net)
    with pytest.raises(UserError, match="canonizers change"):
        attribute(wrap(net, classes=2), torch.rand(1, 3, 16, 16), target=0, method="lrp")
    assert attribute(wrap(net, classes=2), torch.rand(1, 3, 16, 16), target=0, method="lrp",
                     canonizers=[]).attribution.shape == (1, 3, 16, 16)


def test_each_canonizer_copy_is_fresh():
    for cls in (MergeBatchNorm, ResidualCanonizer, ConcatCanonizer):
        a = cls()
        assert type(a.copy()) is cls and a.copy() is not a
