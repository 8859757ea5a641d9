"""Image parametrizations: modules whose `forward()` returns N x C x H x W images in [0, 1].

An `ImageParam` chains three choices (Lucid's recipe, made explicit):

    spatial basis      pixel values, or an rFFT spectrum scaled by 1 / f^decay_power
    colour basis       identity, or the square root of an RGB colour covariance ("decorrelate")
    range              sigmoid (smooth) or clamp (hard) into [0, 1]

plus an optional fourth (alpha) channel. Only the spatial tensor is a parameter; the scalings
are buffers, so `.to(device)` moves everything and the optimizer sees one tensor.
Randomness comes only from the `torch.Generator` passed in (CPU generator; the draw is made on
the CPU and moved, so a seed gives the same start on every device).
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UserError

# Lucid's ImageNet colour-correlation square root (U * sqrt(S) of the RGB covariance SVD).
IMAGENET_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                    [0.27, 0.00, -0.05],
                                    [0.27, -0.09, 0.03]], dtype=torch.float32)


def color_sqrt_from_covariance(cov: torch.Tensor) -> torch.Tensor:
    """A square root M of a 3 x 3 covariance with M @ M.T == cov (Lucid's U * sqrt(S) form)."""
    cov = torch.as_tensor(cov, dtype=torch.float64)
    cov = (cov + cov.T) / 2
    u, s, _ = torch.linalg.svd(cov)
    # SVD signs are arbitrary; fix them so the first component is positive (like Lucid's table)
    signs = torch.sign(u.sum(0))
    signs[signs == 0] = 1
    return (u * signs * s.clamp_min(0).sqrt()).float()


def estimate_color_sqrt(images: torch.Tensor | Iterable[torch.Tensor]) -> torch.Tensor:
    """Colour-correlation square root estimated from images (tensors N x 3 x H x W in [0, 1]).

    Returns M with M @ M.T equal to the RGB covariance of all pixels: pass it as
    `ImageParam(color_sqrt=M)` to decorrelate colours for a domain other than ImageNet.
    """
    if isinstance(images, torch.Tensor):
        images = [images]
    total, count = torch.zeros(3, dtype=torch.float64), 0
    outer = torch.zeros(3, 3, dtype=torch.float64)
    for batch in images:
        pixels = batch.detach().double().permute(0, 2, 3, 1).reshape(-1, 3)
        total += pixels.sum(0)
        outer += pixels.T @ pixels
        count += pixels.shape[0]
    if count < 2:
        raise UserError("need at least two pixels to estimate a colour covariance")
    mean = total / count
    cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
    return color_sqrt_from_covariance(cov)


def color_sqrt_from_folder(folder: str | os.PathLike, size: int = 128) -> torch.Tensor:
    """`estimate_color_sqrt` over every image in a folder (resized to `size` to bound the cost)."""
    from ..images import find_images, load_batch

    paths = find_images(folder)
    return estimate_color_sqrt(load_batch([p], size, 1.0) for p in paths)


def rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """Spatial frequency magnitude (cycles per pixel) of each rFFT coefficient, h x (w//2 + 1)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def _logit(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x) - torch.log1p(-x)


class ImageParam(nn.Module):
    """A batch of parametrized images; `forward()` returns N x C x H x W in [0, 1] (C = 3 or 4).

    fft: optimize an rFFT spectrum whose coefficients are scaled by 1 / max(f, 1/size)^decay_power
        (higher decay_power -> smoother images); otherwise optimize pixels.
    decorrelate: optimize in a decorrelated colour basis (`color_sqrt`, default Lucid's ImageNet
        matrix, normalized so its largest column has unit norm).
    squash: "sigmoid" (default) or "clamp" to bring values into [0, 1].
    alpha: add a fourth (opacity) channel; render composites it over random backgrounds.
    init: start from this image (C x H x W or N x C x H x W in [0, 1]; 3 or 4 channels) instead
        of low-amplitude noise; exact up to the squash's clipping at 0 and 1.
    sd: standard deviation of the random start (in the parameter space).
    """

    def __init__(self, size: int | tuple[int, int], batch: int = 1, *, fft: bool = True,
                 decorrelate: bool = True, decay_power: float = 1.0, squash: str = "sigmoid",
                 alpha: bool = False, color_sqrt: Optional[torch.Tensor] = None, sd: float = 0.01,
                 init: Optional[torch.Tensor] = None, generator: Optional[torch.Generator] = None):
        super().__init__()
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if h < 1 or w < 1 or batch < 1:
            raise UserError(f"image size and batch must be positive (got {h}x{w}, batch {batch})")
        if squash not in ("sigmoid", "clamp"):
            raise UserError(f"squash must be 'sigmoid' or 'clamp', not {squash!r}")
        self.size = (h, w)
        self.batch = batch
        self.fft = fft
        self.decorrelate = decorrelate
        self.decay_power = float(decay_power)
        if not math.isfinite(self.decay_power):
            raise UserError(f"decay_power must be a finite number, got {decay_power}")
        self.squash = squash
        self.alpha = alpha
        self.channels = 4 if alpha else 3

        sqrt = IMAGENET_COLOR_SQRT if color_sqrt is None else torch.as_tensor(color_sqrt).float()
        if sqrt.shape != (3, 3):
            raise UserError(f"color_sqrt must be 3 x 3, got {tuple(sqrt.shape)}")
        sqrt = sqrt / sqrt.norm(dim=0).max()
        self.register_buffer("color", sqrt if decorrelate else torch.eye(3))
        if fft:
            freqs = rfft2d_freqs(h, w)
            scale = 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** self.decay_power
            self.register_buffer("scale", scale.float())
            shape = (batch, self.channels, h, w // 2 + 1, 2)
        else:
            self.register_buffer("scale", torch.ones(()))
            shape = (batch, self.channels, h, w)
        start = torch.randn(shape, generator=generator) * sd
        self.raw = nn.Parameter(start)
        if init is not None:
            self.set_image(init)

    # -- the chain: spatial -> colour -> range ------------------------------------------

    # Lucid divides the FFT image by 4 ("reduces saturation"); kept so lr 0.05 means the same.
    FFT_MAGIC = 4.0

    def spatial(self) -> torch.Tensor:
        """The unconstrained image (N x C x H x W) before colour mixing and squashing."""
        if not self.fft:
            return self.raw
        h, w = self.size
        # the division by FFT_MAGIC (a power of two, so exact) is applied to the small scale
        # table rather than to the full image batch: same values, one pass less per step
        spectrum = torch.view_as_complex(self.raw) * (self.scale / self.FFT_MAGIC)
        return torch.fft.irfft2(spectrum, s=(h, w), norm="ortho")

    def _to_range(self, x: torch.Tensor) -> torch.Tensor:
        if self.squash == "sigmoid":
            return torch.sigmoid(x)
        # clamp with a straight-through gradient would stall at the bounds; Lucid's
        # constrain_L_inf keeps gradients flowing, so does this: values are clipped, slopes kept.
        y = x + 0.5
        return y + (y.clamp(0, 1) - y).detach()

    def _from_range(self, x: torch.Tensor) -> torch.Tensor:
        return _logit(x) if self.squash == "sigmoid" else x - 0.5

    def forward(self) -> torch.Tensor:
        x = self.spatial()
        # colour mixing as one batched (3 x 3) @ (3 x HW) matmul: the same sum as
        # einsum("nchw,dc->ndhw"), which on the CPU permutes to a slow path (~15x slower here)
        rgb = (self.color @ x[:, :3].flatten(2)).view(x.shape[0], 3, *x.shape[2:])
        out = self._to_range(rgb)
        if self.alpha:
            out = torch.cat([out, self._to_range(x[:, 3:])], dim=1)
        return out

    @torch.no_grad()
    def set_image(self, image: torch.Tensor) -> None:
        """Make `forward()` return `image` (broadcast over the batch; exact up to clipping)."""
        image = torch.as_tensor(image, dtype=torch.float32, device=self.raw.device)
        if image.dim() == 3:
            image = image[None]
        h, w = self.size
        if image.shape[-2:] != (h, w):
            image = nn.functional.interpolate(image, size=(h, w), mode="bilinear", align_corners=False,
                                              antialias=True)
        image = image.expand(self.batch, -1, -1, -1)
        if image.shape[1] == 3 and self.alpha:
            image = torch.cat([image, torch.ones_like(image[:, :1])], dim=1)
        if image.shape[1] != self.channels:
            raise UserError(f"init image has {image.shape[1]} channels, the parametrization {self.channels}")
        pre = self._from_range(image.clamp(0, 1))
        rgb = torch.einsum("nchw,dc->ndhw", pre[:, :3], torch.linalg.inv(self.color))
        x = torch.cat([rgb, pre[:, 3:]], dim=1)
        if self.fft:
            spectrum = torch.fft.rfft2(x * self.FFT_MAGIC, norm="ortho") / self.scale
            self.raw.copy_(torch.view_as_real(spectrum))
        else:
            self.raw.copy_(x)

    def extra_repr(self) -> str:
        return (f"batch={self.batch}, size={self.size}, fft={self.fft}, decorrelate={self.decorrelate}, "
                f"decay_power={self.decay_power}, squash={self.squash!r}, alpha={self.alpha}")


def pixel(size, batch: int = 1, **kw) -> ImageParam:
    """Pixel-basis image (see ImageParam for the options)."""
    return ImageParam(size, batch, fft=False, **kw)


def fft(size, batch: int = 1, **kw) -> ImageParam:
    """Fourier-basis image (see ImageParam for the options)."""
    return ImageParam(size, batch, fft=True, **kw)


def composite(image: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """RGBA N x 4 x H x W over a background (N or 1 x 3 x H x W, or a colour) -> RGB."""
    if image.shape[1] != 4:
        return image
    rgb, a = image[:, :3], image[:, 3:]
    return rgb * a + background * (1 - a)


def random_background(n: int, size: Sequence[int], generator: Optional[torch.Generator],
                      device=None) -> torch.Tensor:
    """Random smooth backgrounds (N x 3 x H x W): a random colour plus blurry noise.

    Compositing over a fresh one each step means transparent regions cannot help the
    objective, so transparency reads "this part does not matter" (Lucid's alpha recipe).
    """
    h, w = size
    colour = torch.rand(n, 3, 1, 1, generator=generator)
    coarse = torch.rand(n, 3, max(2, h // 16), max(2, w // 16), generator=generator)
    noise = nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (0.5 * colour + 0.5 * noise).to(device)
