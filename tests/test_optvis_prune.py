"""Branches no objective reads are skipped in render's copy, and the gradient does not change."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from vizsuite.optvis import channel, per_image
from vizsuite.optvis.prune import Join, Skippable, Unread, channels_read, mark_branches
from vizsuite.zoo.inceptionv1 import Concat


class _Block(nn.Module):
    """A planted two-branch block: channels 0-5 from `a` (conv -> ReLU), 6-9 from `b` (conv ->
    ReLU -> conv). `runs` counts the calls of b's modules."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a, self.ra = nn.Conv2d(8, 6, 1), nn.ReLU()
        self.b1, self.rb, self.b2 = nn.Conv2d(8, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 4, 1)
        self.join = Concat()
        self.runs = 0
        self.b1.register_forward_pre_hook(self._count)    # hooked: stays a plain, running module

    def _count(self, m, i):
        self.runs += 1

    def forward(self, x):
        x = self.stem(x)
        return self.join([self.ra(self.a(x)), self.b2(self.rb(self.b1(x)))])


def test_mark_branches_finds_each_branchs_own_modules():
    net = _Block().eval().requires_grad_(False)
    assert mark_branches(net) == 1
    assert isinstance(net.join, Join) and type(net.stem) is nn.Conv2d          # stem feeds both
    a, b = net.join.branches
    assert {m.module for m in a} == {net.a.module, net.ra.module}
    assert {type(m.module) for m in b} == {nn.ReLU, nn.Conv2d} and type(net.b1) is nn.Conv2d   # hooked


@pytest.mark.parametrize("units,skipped", [([0, 3, 5], "b"), ([6, 9], "a"), ([2, 7], None)])
def test_unread_branches_are_skipped_and_the_gradient_is_the_same(units, skipped):
    torch.manual_seed(0)
    ref = _Block().eval().requires_grad_(False)
    net = _Block().eval().requires_grad_(False)
    net.load_state_dict(ref.state_dict())
    mark_branches(net)
    from vizsuite.capture import Capture

    objective = per_image([channel("join", u) for u in units])
    assert channels_read(objective, "join") == set(units)
    x = torch.rand(len(units), 3, 9, 9)

    def grad(model, unread=None):
        xi = x.clone().requires_grad_()
        with Capture(model, ["join"]) as cap:
            from vizsuite.optvis.objectives import Context

            value = objective(Context(xi, cap(xi), None)).sum()
        (g,) = torch.autograd.grad(value, xi)
        return value.detach(), g

    expected = grad(ref)
    with Unread(net, objective) as unread:
        first = grad(net)                  # a full step: widths and shapes recorded
        n = unread.arm()
        runs = net.runs
        second = grad(net)
        assert n == {"a": 2, "b": 2, None: 0}[skipped]
        if skipped == "a":
            assert all(m.skip for m in net.join.branches[0])
        assert net.runs == runs + 1        # the hooked b1 always runs
    assert not any(m.skip for m in net.modules() if isinstance(m, Skippable))      # exit restores
    for got in (first, second):
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_render_of_inceptionv1_mixed4a_units_skips_three_branches_with_the_same_gradient():
    """8 units of mixed4a's 1x1 branch: the 3x3, 5x5 and pool branches (11 modules) are skipped
    after the first step; the image gradient equals the unskipped copy's, bitwise."""
    from vizsuite.zoo import load_model

    R = importlib.import_module("vizsuite.optvis.render")
    model = load_model("inceptionv1", random_weights=True)
    objective = per_image([channel("mixed4a", u) for u in range(8)])
    net = R._render_copy(model, torch.rand(1, 3, 224, 224), ("mixed4a",), False, True, True, "fp32", "leaky")
    x = torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    grads = []
    with R._Forward(net, objective, "fp32") as forward, Unread(net, objective) as unread:
        for step in range(3):
            xi = x.clone().requires_grad_()
            value = objective(forward(xi, xi)).sum()
            grads.append(torch.autograd.grad(value, xi)[0])
            if step == 0:
                assert unread.arm() == 11
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[1], grads[2])
    assert channels_read(channel("mixed4a", 3) - channel("mixed4a", 200), "mixed4a") is None
