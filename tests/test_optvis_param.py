"""Image parametrizations: shapes, range, determinism, colour decorrelation, 1/f scaling, init."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vizsuite.errors import UserError
from vizsuite.optvis import (IMAGENET_COLOR_SQRT, ImageParam, composite, estimate_color_sqrt,
                             random_background)
from vizsuite.optvis.param import color_sqrt_from_folder, rfft2d_freqs


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("size,batch", [(32, 1), ((17, 24), 3), (31, 5)])
def test_shapes_and_range(fft, decorrelate, size, batch):
    p = ImageParam(size, batch, fft=fft, decorrelate=decorrelate, sd=1.0, generator=gen())
    img = p()
    h, w = (size, size) if isinstance(size, int) else size
    assert img.shape == (batch, 3, h, w)
    assert img.min() >= 0 and img.max() <= 1
    assert list(p.parameters()) == [p.raw]


def test_clamp_squash_stays_in_range_and_keeps_gradient():
    p = ImageParam(16, 2, squash="clamp", sd=5.0, generator=gen())
    img = p()
    assert img.min() >= 0 and img.max() <= 1
    img.sum().backward()
    assert p.raw.grad.abs().sum() > 0


def test_same_generator_same_image_other_seed_differs():
    a = ImageParam(24, 2, generator=gen(3))()
    b = ImageParam(24, 2, generator=gen(3))()
    c = ImageParam(24, 2, generator=gen(4))()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_imagenet_color_matrix_is_a_covariance_square_root():
    m = IMAGENET_COLOR_SQRT.double()
    cov = m @ m.T
    assert torch.allclose(cov, cov.T)
    assert torch.linalg.eigvalsh(cov).min() > 0  # positive definite: invertible decorrelation
    p = ImageParam(8, generator=gen())
    assert p.color.norm(dim=0).max() == pytest.approx(1.0, abs=1e-6)  # Lucid's normalization


def test_estimated_color_sqrt_times_transpose_is_the_covariance():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.0, 0.0], [0.8, 0.3, 0.0], [0.5, 0.2, 0.4]])
    pixels = rng.normal(size=(20000, 3)) @ mix.T * 0.1 + 0.5
    images = torch.tensor(pixels, dtype=torch.float32).reshape(2, 100, 100, 3).permute(0, 3, 1, 2)
    m = estimate_color_sqrt(images).double()
    expected = np.cov(pixels.T)
    assert np.allclose((m @ m.T).numpy(), expected, atol=1e-4)


def test_color_sqrt_from_folder(photos_dir):
    m = color_sqrt_from_folder(photos_dir, size=32)
    assert m.shape == (3, 3)
    # natural photos: the first component is luminance-like (all channels the same sign)
    assert (m[:, 0] > 0).all()
    p = ImageParam(16, color_sqrt=m, generator=gen())
    assert p().shape == (1, 3, 16, 16)


def test_fft_scale_is_one_over_f_to_the_decay_power():
    for decay in (1.0, 2.0):
        p = ImageParam((16, 20), fft=True, decay_power=decay, generator=gen())
        freqs = rfft2d_freqs(16, 20)
        assert p.scale.shape == freqs.shape == (16, 11)
        f = freqs[3, 4].item()
        assert p.scale[3, 4].item() == pytest.approx(1 / f ** decay, rel=1e-5)
        assert p.scale[0, 0].item() == pytest.approx(20 ** decay, rel=1e-5)  # DC clamped to 1/size


def test_fft_images_have_a_one_over_f_spectrum():
    # white-noise coefficients -> the spatial image's amplitude spectrum falls as 1/f^decay
    for decay in (1.0, 1.5):
        p = ImageParam(64, 16, fft=True, decorrelate=False, decay_power=decay, sd=1.0, generator=gen())
        x = p.spatial().detach().double()
        amp = torch.fft.rfft2(x).abs().mean((0, 1))
        freqs = rfft2d_freqs(64, 64)
        lo = (freqs > 0.05) & (freqs < 0.1)
        hi = (freqs > 0.2) & (freqs < 0.4)
        ratio = amp[lo].mean() / amp[hi].mean()
        f_ratio = freqs[hi].mean() / freqs[lo].mean()
        slope = torch.log(ratio) / torch.log(f_ratio)
        assert slope.item() == pytest.approx(decay, abs=0.15)


@pytest.mark.parametrize("fft", [True, False])
@pytest.mark.parametrize("squash", ["sigmoid", "clamp"])
def test_init_from_image_round_trips(fft, squash):
    torch.manual_seed(0)
    image = torch.rand(3, 20, 24) * 0.9 + 0.05
    p = ImageParam((20, 24), 2, fft=fft, squash=squash, init=image, generator=gen())
    out = p()
    assert torch.allclose(out, image.expand(2, -1, -1, -1), atol=1e-4)


def test_alpha_param_and_compositing():
    p = ImageParam(16, 2, alpha=True, generator=gen())
    img = p()
    assert img.shape == (2, 4, 16, 16)
    assert 0 <= img.min() and img.max() <= 1
    bg = random_background(2, (16, 16), gen())
    assert bg.shape == (2, 3, 16, 16)
    opaque = torch.cat([torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4)], 1)
    clear = torch.cat([torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 4)], 1)
    back = torch.full((1, 3, 4, 4), 0.7)
    assert torch.equal(composite(opaque, back), torch.zeros(1, 3, 4, 4))
    assert torch.equal(composite(clear, back), back)
    rgb = torch.rand(1, 3, 4, 4)
    assert composite(rgb, back) is rgb  # RGB passes through
    init = torch.rand(4, 16, 16) * 0.8 + 0.1
    q = ImageParam(16, alpha=True, init=init, generator=gen())
    assert torch.allclose(q(), init[None], atol=1e-4)


def test_bad_arguments():
    with pytest.raises(UserError):
        ImageParam(0)
    with pytest.raises(UserError):
        ImageParam(8, squash="tanh")
    with pytest.raises(UserError):
        ImageParam(8, init=torch.rand(4, 8, 8))  # RGBA init into an RGB param
