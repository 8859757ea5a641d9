"""The fast LocalResponseNorm equals torch's, forward and gradient, in float64."""

import pytest
import torch
import torch.nn as nn

from vizsuite.zoo.lrn import LocalResponseNorm


@pytest.mark.parametrize("size,alpha,beta,k", [(9, 9.99999974738e-05, 0.5, 1.0),   # InceptionV1's
                                               (5, 1e-3, 0.75, 2.0),               # AlexNet's
                                               (4, 0.1, 0.75, 1.0)])               # even window
@pytest.mark.parametrize("channels_last", [False, True])
def test_matches_torch_forward_and_gradient(size, alpha, beta, k, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 23, 7, 9, generator=g, dtype=torch.float64) * 20
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(x.shape, generator=g, dtype=torch.float64)
    ours, ref = LocalResponseNorm(size, alpha, beta, k), nn.LocalResponseNorm(size, alpha, beta, k)
    results = []
    for module in (ours, ref):
        xi = x.clone().requires_grad_()
        y = module(xi)
        (gx,) = torch.autograd.grad(y, xi, grad_out)
        results.append((y, gx))
    (y, gx), (y_ref, gx_ref) = results
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)
    # the normalization really acts here (not a near-identity case)
    assert (y / x).sub(1).abs().max() > 0.05


def test_gradcheck_and_other_ranks():
    x = (torch.randn(1, 6, 3, 4, dtype=torch.float64) * 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: LocalResponseNorm(3, 0.5, 0.75, 1.0)(t), (x,))
    # 3-D input goes through torch's own implementation
    x3 = torch.randn(2, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(LocalResponseNorm(3)(x3), nn.LocalResponseNorm(3)(x3))
    assert isinstance(LocalResponseNorm(3), nn.LocalResponseNorm)
