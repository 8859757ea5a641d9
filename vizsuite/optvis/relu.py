"""Redirected ReLU gradients: Lucid's `relu_gradient_override`, on by default there and here.

A unit that no part of the start image excites gets no gradient through the ReLUs in front of
it, and the optimization never takes off. Lucid's fix (lucid/misc/redirected_relu_grad.py):
per image, if the exact ReLU gradient is zero everywhere in a layer, pass the incoming
gradient through instead, except where it would push an already negative input further down
(for ReLU6 also: an input above 6 further up). Wherever any gradient flows, the gradient is
the exact one, so a render that never hits a dead layer is unchanged.

torch-lucent's InceptionV1 instead leaks 0.1 x the gradient through every negative input at
every step; measured at 64 steps (benchmarks/results/render.md notes) that helps a random-weight
InceptionV1 a little more but costs EfficientNet-Lite0 a third of its activation at blocks.5,
so vizsuite uses Lucid's rule.

Only the render loop's private model copy gets these modules (`redirect_relus`); the
caller's model is never changed.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class _RedirectedClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo: float, hi: Optional[float]):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.lo, ctx.hi
        if hi is None:
            exact = torch.ops.aten.threshold_backward(grad, x, lo)
        else:
            exact = torch.ops.aten.hardtanh_backward(grad, x, lo, hi)
        dims = tuple(range(1, x.dim())) if x.dim() > 1 else (0,)
        # per image: does any gradient get through? amax first (usually nonzero, then done), amin
        # only if needed: reductions without a temporary, ~10x faster than Tensor.any on the CPU
        flows = exact.amax(dim=dims, keepdim=True) != 0
        if not bool(flows.all()):
            flows |= exact.amin(dim=dims, keepdim=True) != 0
        if bool(flows.all()):  # the usual case: the exact gradient
            return exact, None, None
        push = (x < lo) & (grad > 0)  # gradient descent would lower an input that is already below
        if hi is not None:
            push |= (x > hi) & (grad < 0)
        return torch.where(flows, exact, grad.masked_fill(push, 0)), None, None


class RedirectedReLU(nn.Module):
    """clamp(x, lo, hi) forward (ReLU: hi None; ReLU6: 0, 6); Lucid's redirected gradient backward."""

    def __init__(self, lo: float = 0.0, hi: Optional[float] = None):
        super().__init__()
        self.lo, self.hi = float(lo), (None if hi is None else float(hi))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RedirectedClamp.apply(x, self.lo, self.hi)

    def extra_repr(self) -> str:
        return f"lo={self.lo}, hi={self.hi}"


def _replacement(module: nn.Module) -> Optional[RedirectedReLU]:
    # exact types: a subclass may have changed forward, and then it is not a ReLU any more
    if type(module) is nn.ReLU:
        return RedirectedReLU(0.0, None)
    if type(module) in (nn.ReLU6, nn.Hardtanh) and module.min_val == 0:
        return RedirectedReLU(0.0, module.max_val)
    return None


def redirect_relus(net: nn.Module) -> int:
    """Replace `net`'s nn.ReLU / nn.ReLU6 modules by RedirectedReLU, in place (call it on a copy).

    Returns how many were replaced. ReLUs applied functionally (F.relu in forward) are not seen.
    """
    count = 0
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            new = _replacement(child)
            if new is not None:
                setattr(parent, name, new)
                count += 1
    return count
