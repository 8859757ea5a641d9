"""Transforms: exact replay from a generator, differentiability, geometry conventions."""

from __future__ import annotations

import pytest
import torch

from vizsuite.errors import UserError
from vizsuite.optvis import (Compose, Jitter, Pad, RandomRotate, RandomScale, Resize, get_transforms,
                             standard_transforms)
from vizsuite.optvis.transforms import Lambda


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def images(n=3, size=40):
    torch.manual_seed(1)
    return torch.rand(n, 3, size, size)


def test_same_generator_replays_exactly_other_seed_differs():
    t = standard_transforms(input_size=48)
    x = images()
    a, b, c = t(x, gen(5)), t(x, gen(5)), t(x, gen(6))
    assert a.shape == (3, 3, 48, 48)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # a sequence of calls from one generator replays too (what render does each step)
    g1, g2 = gen(7), gen(7)
    assert all(torch.equal(t(x, g1), t(x, g2)) for _ in range(3))


def test_global_rng_does_not_matter():
    t = standard_transforms(input_size=32)
    x = images()
    torch.manual_seed(0)
    a = t(x, gen(1))
    torch.manual_seed(123)
    b = t(x, gen(1))
    assert torch.equal(a, b)


def test_differentiable():
    x = images().requires_grad_(True)
    out = standard_transforms(input_size=32)(x, gen())
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()


def test_pad_fills_and_keeps_the_interior():
    x = images(1, 10)
    out = Pad(3, fill=0.5)(x, gen())
    assert out.shape == (1, 3, 16, 16)
    assert torch.allclose(out[..., 3:13, 3:13], x, atol=1e-5)
    assert torch.allclose(out[..., :3, :], torch.full_like(out[..., :3, :], 0.5))



def test_fused_fill_warp_matches_kornias_fill_mode():
    """The single-resampling fill (warp images - fill, add fill back) equals kornia's two-warp
    "fill" padding mode, values and gradients, for a rotated and scaled padded canvas."""
    from kornia.geometry.transform import warp_affine

    from vizsuite.optvis.transforms import _warp

    t = [Pad(6, fill=0.3), RandomScale([0.8, 1.2]), RandomRotate([-30, 17])]
    x1 = images(4, 20).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    ours = _warp(x1, t, gen(3))
    g = gen(3)
    total, canvas = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1), (20, 20)
    for step in t:
        m, canvas = step.step(4, canvas, g)
        total = m @ total
    ref = warp_affine(x2, total[:, :2].float(), dsize=canvas, mode="bilinear", padding_mode="fill",
                      align_corners=True, fill_value=torch.full((3,), 0.3))
    assert torch.allclose(ours, ref, atol=1e-5)
    w = torch.rand_like(ours)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)

@pytest.mark.parametrize("mode", ["zeros", "border", "reflection"])
def test_warp_affine_matches_kornia(mode):
    """Our warp (float64 matrix algebra, no kornia import at start-up) equals kornia's
    warp_affine, values and gradients, with a canvas change (rotate + scale + resize)."""
    from kornia.geometry.transform import warp_affine as kornia_warp

    from vizsuite.optvis.transforms import Resize, _warp

    t = [RandomScale([0.8, 1.2]), RandomRotate([-30, 17]), Resize(13)]
    x1 = images(4, 20).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    ours = _warp(x1, [Pad(3, mode=mode)] + t, gen(5))
    g = gen(5)
    total, canvas = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1), (20, 20)
    for step in [Pad(3, mode=mode)] + t:
        m, canvas = step.step(4, canvas, g)
        total = m @ total
    ref = kornia_warp(x2, total[:, :2].float(), dsize=canvas, mode="bilinear", padding_mode=mode,
                      align_corners=True)
    assert ours.shape == ref.shape == (4, 3, 13, 13)
    assert torch.allclose(ours, ref, atol=1e-5)
    w = torch.rand_like(ours)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)


def test_jitter_is_an_integer_crop():
    x = images(4, 12)
    out = Jitter(4)(x, gen(2))
    assert out.shape == (4, 3, 8, 8)
    for i in range(4):  # each image is some exact 8 x 8 crop of its source
        crops = [x[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.allclose(out[i], c, atol=1e-5) for c in crops)


def test_rotate_90_matches_rot90():
    x = images(1, 9)
    out = RandomRotate([90])(x, gen())
    ref = torch.rot90(x, k=1, dims=(-2, -1))
    ref_other = torch.rot90(x, k=-1, dims=(-2, -1))
    assert torch.allclose(out, ref, atol=1e-4) or torch.allclose(out, ref_other, atol=1e-4)


def test_scale_one_and_resize_identity():
    x = images(2, 16)
    assert torch.allclose(RandomScale([1.0])(x, gen()), x, atol=1e-5)
    assert torch.allclose(Resize(16)(x, gen()), x, atol=1e-5)
    assert Resize(24)(x, gen()).shape == (2, 3, 24, 24)


def test_compose_fuses_and_matches_sequential_integer_steps():
    # integer translations are exact, so one fused warp must equal the steps applied one by one
    x = images(2, 20)
    steps = [Pad(4), Jitter(6)]
    fused = Compose(steps)(x, gen(9))
    g = gen(9)
    one_by_one = x
    for s in steps:
        one_by_one = s(one_by_one, g)
    assert torch.allclose(fused, one_by_one, atol=1e-5)


def test_presets_and_custom_lists():
    x = images(1, 32)
    assert torch.equal(get_transforms("none")(x, gen()), x)
    assert get_transforms("none", 48)(x, gen()).shape[-1] == 48
    assert get_transforms("lucid", 40)(x, gen()).shape[-1] == 40
    custom = get_transforms([Jitter(2), Lambda(lambda t: 1 - t)], 24)
    assert custom(x, gen()).shape[-1] == 24
    with pytest.raises(UserError):
        get_transforms("strong")
    with pytest.raises(UserError):
        Jitter(40)(x, gen())
