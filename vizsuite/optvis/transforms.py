"""Differentiable random transforms with explicit generators (robustness for feature visualization).

Every transform is a module called as `t(images, generator)`. The geometric ones (pad, jitter,
scale, rotate, resize) are affine maps of the canvas; `Compose` multiplies consecutive affine
steps into one 2 x 3 matrix per image and applies it with a single `affine_grid` +
`grid_sample` (kornia's `warp_affine`, done here: its matrix algebra runs in float64 on the CPU,
and importing kornia cost 0.3 s of every render's start-up). Why:
  - kornia's `RandomAffine`/`RandomRotation` draw from the global RNG, so a seed could not replay
    them exactly and another library's random calls would change our pictures. We draw every
    parameter ourselves from the `torch.Generator` we are given.
  - one resampling instead of five: less blur from repeated bilinear interpolation, and one
    kernel launch instead of a chain of interpolate/crop/pad calls (less Python per step).
Parameters are drawn per image, so a batch of K units sees K independent augmentations.

Geometry convention: pixel-centre coordinates with align_corners=True (pixel i sits at i),
matrices map source pixels to destination pixels (what warp_affine expects).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from ..errors import UserError


def _translate(n: int, tx, ty) -> torch.Tensor:
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    m[:, 0, 2] = torch.as_tensor(tx, dtype=torch.float64)
    m[:, 1, 2] = torch.as_tensor(ty, dtype=torch.float64)
    return m


def _about_centre(n: int, canvas: tuple[int, int], linear: torch.Tensor) -> torch.Tensor:
    """N x 3 x 3 affine applying the N x 2 x 2 `linear` map about the canvas centre."""
    h, w = canvas
    cy, cx = (h - 1) / 2, (w - 1) / 2
    m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    m[:, :2, :2] = linear
    return _translate(n, cx, cy) @ m @ _translate(n, -cx, -cy)


class Transform(nn.Module):
    """Base class: `forward(images, generator)` returns transformed images."""

    def forward(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        raise NotImplementedError


class AffineTransform(Transform):
    """A geometric step: maps (canvas size, per-image random draws) to a matrix and a new canvas.

    Applied alone it warps once; inside `Compose` it is fused with its affine neighbours.
    """

    #: how pixels outside the source are filled by the fused warp ("fill" uses `fill_value`)
    padding_mode: Optional[str] = None

    def step(self, n: int, canvas: tuple[int, int], generator) -> tuple[torch.Tensor, tuple[int, int]]:
        raise NotImplementedError

    def forward(self, images, generator=None):
        return _warp(images, [self], generator)


class Pad(AffineTransform):
    """Grow the canvas by `pad` pixels per side (filled with `fill`, or `mode` reflection/border)."""

    def __init__(self, pad: int, fill: float = 0.5, mode: str = "fill"):
        super().__init__()
        if mode not in ("fill", "reflection", "border", "zeros"):
            raise UserError(f"pad mode must be fill, reflection, border or zeros, not {mode!r}")
        self.pad, self.fill, self.padding_mode = int(pad), float(fill), mode

    def step(self, n, canvas, generator):
        h, w = canvas
        return _translate(n, self.pad, self.pad), (h + 2 * self.pad, w + 2 * self.pad)

    def extra_repr(self):
        return f"{self.pad}, fill={self.fill}, mode={self.padding_mode!r}"


class Jitter(AffineTransform):
    """Random crop that removes `d` pixels in each dimension at a random offset in [0, d]."""

    def __init__(self, d: int):
        super().__init__()
        self.d = int(d)

    def step(self, n, canvas, generator):
        h, w = canvas
        off = torch.randint(0, self.d + 1, (2, n), generator=generator).double()
        return _translate(n, -off[0], -off[1]), (h - self.d, w - self.d)

    def extra_repr(self):
        return str(self.d)


class RandomScale(AffineTransform):
    """Zoom about the centre by a factor drawn from `scales` (canvas size unchanged).

    The canvas is kept (unlike Lucid's interpolate) because the image is resized to the
    model's input size at the end anyway: what matters is the zoom relative to the canvas.
    """

    def __init__(self, scales: Sequence[float]):
        super().__init__()
        self.scales = tuple(float(s) for s in scales)

    def step(self, n, canvas, generator):
        idx = torch.randint(0, len(self.scales), (n,), generator=generator)
        s = torch.tensor(self.scales, dtype=torch.float64)[idx]
        linear = torch.zeros(n, 2, 2, dtype=torch.float64)
        linear[:, 0, 0] = s
        linear[:, 1, 1] = s
        return _about_centre(n, canvas, linear), canvas

    def extra_repr(self):
        return str(self.scales)


class RandomRotate(AffineTransform):
    """Rotate about the centre by an angle (degrees) drawn from `angles`."""

    def __init__(self, angles: Sequence[float]):
        super().__init__()
        self.angles = tuple(float(a) for a in angles)

    def step(self, n, canvas, generator):
        idx = torch.randint(0, len(self.angles), (n,), generator=generator)
        theta = torch.tensor(self.angles, dtype=torch.float64)[idx] * math.pi / 180
        c, s = torch.cos(theta), torch.sin(theta)
        linear = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        return _about_centre(n, canvas, linear), canvas

    def extra_repr(self):
        return f"{min(self.angles)}..{max(self.angles)} ({len(self.angles)} angles)"


class Resize(AffineTransform):
    """Resize the canvas to `size` x `size` (the model's input size)."""

    def __init__(self, size: int | tuple[int, int]):
        super().__init__()
        self.out = (size, size) if isinstance(size, int) else tuple(size)

    def step(self, n, canvas, generator):
        h, w = canvas
        oh, ow = self.out
        linear = torch.zeros(n, 2, 2, dtype=torch.float64)
        linear[:, 0, 0] = (ow - 1) / max(w - 1, 1)
        linear[:, 1, 1] = (oh - 1) / max(h - 1, 1)
        m = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
        m[:, :2, :2] = linear
        return m, self.out

    def extra_repr(self):
        return f"{self.out}"


def _pixel_to_unit(h: int, w: int) -> torch.Tensor:
    """3 x 3: pixel-centre coordinates (align_corners=True) -> grid_sample's [-1, 1]."""
    m = torch.eye(3, dtype=torch.float64)
    m[0, 0] = 2.0 / (w - 1 if w > 1 else 1e-14)
    m[1, 1] = 2.0 / (h - 1 if h > 1 else 1e-14)
    m[0, 2] = m[1, 2] = -1.0
    return m


def warp_affine(images: torch.Tensor, matrix: torch.Tensor, dsize: tuple[int, int],
                padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinear warp by N x 2 x 3 (or 3 x 3) matrices mapping source pixels to destination
    pixels (align_corners=True): kornia's `warp_affine`, with the inverse taken in float64."""
    n, c, h, w = images.shape
    full = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    full[:, :2, :] = matrix.detach().to("cpu", torch.float64)[:, :2, :]
    # grid_sample wants, per output pixel, where to read: the inverse, in [-1, 1] units
    dst_from_src = _pixel_to_unit(*dsize) @ full @ torch.linalg.inv(_pixel_to_unit(h, w))
    theta = torch.linalg.inv(dst_from_src)[:, :2, :].to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [n, c, dsize[0], dsize[1]], align_corners=True)
    if (padding_mode == "zeros" and images.dtype == torch.float32 and images.requires_grad
            and torch.is_grad_enabled() and kernels.plain(images)):
        return _GridSample.apply(images, grid)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


class _GridSample(torch.autograd.Function):
    """torch's bilinear grid_sample forward; the input gradient from `vizsuite.kernels` (one image
    per thread, 1.6x faster than torch's on render's 8 x 3 x 128^2 -> 224^2 warp)."""

    @staticmethod
    def forward(ctx, images, grid):
        ctx.save_for_backward(grid)
        ctx.size = tuple(images.shape[-2:])
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    @staticmethod
    def backward(ctx, grad):
        (grid,) = ctx.saved_tensors
        return kernels.grid_sample_backward(grad, grid, ctx.size), None


def _warp(images: torch.Tensor, steps: Sequence[AffineTransform], generator) -> torch.Tensor:
    """Apply affine steps as one warp (matrices drawn on the CPU from `generator`)."""
    n = images.shape[0]
    canvas = tuple(images.shape[-2:])
    total = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    mode, fill = "zeros", 0.0
    for t in steps:
        m, canvas = t.step(n, canvas, generator)
        if canvas[0] < 1 or canvas[1] < 1:
            raise UserError(f"{type(t).__name__} leaves no pixels (canvas {canvas})")
        total = m @ total
        if t.padding_mode is not None:
            mode, fill = t.padding_mode, getattr(t, "fill", 0.0)
    if torch.allclose(total, torch.eye(3, dtype=torch.float64)) and canvas == tuple(images.shape[-2:]):
        return images
    if mode == "fill":
        # Bilinear weights sum to one, so warping (images - fill) with zero padding and adding
        # fill back equals a warp that reads `fill` outside the source. kornia's "fill" mode
        # warps a second, all-ones mask to get the same result: this is one resampling
        # (forward and backward) instead of two.
        return warp_affine(images - fill, total, canvas, "zeros") + fill
    return warp_affine(images, total, canvas, mode)


class Compose(Transform):
    """Apply transforms in order; consecutive affine steps are fused into one warp."""

    def __init__(self, transforms: Sequence[Transform]):
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, images, generator=None):
        run: list[AffineTransform] = []
        for t in self.transforms:
            if isinstance(t, AffineTransform):
                run.append(t)
                continue
            if run:
                images, run = _warp(images, run, generator), []
            images = t(images, generator)
        return _warp(images, run, generator) if run else images


class Lambda(Transform):
    """Wrap a deterministic function `images -> images` (no randomness) as a transform."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, images, generator=None):
        return self.fn(images)


def _px(n: float, scale: float) -> int:
    return max(0, int(round(n * scale)))


def standard_transforms(input_size: Optional[int] = None, image_size: Optional[int] = None) -> Compose:
    """The default robust set: pad 16, jitter 16, scale 0.9..1.1, rotate -10..10, jitter 8, resize.

    Stronger than Lucid's (pad 12, jitter 8, scale 0.9..1.1, rotate -10..10 with extra weight
    on 0, jitter 4): EfficientNet's small, sharp units otherwise latch onto high-frequency
    patterns. Pixel amounts are meant
    at the model's input size and scaled by image_size / input_size, so a small image gets the
    same displacement as seen by the model.
    """
    k = image_size / input_size if image_size and input_size else 1.0
    steps: list[Transform] = [
        Pad(_px(16, k), fill=0.5),
        Jitter(_px(16, k)),
        RandomScale([1 + (i - 5) / 50 for i in range(11)]),
        RandomRotate(list(range(-10, 11))),
        Jitter(_px(8, k)),
    ]
    if input_size is not None:
        steps.append(Resize(input_size))
    return Compose(steps)


def lucid_transforms(input_size: Optional[int] = None, image_size: Optional[int] = None) -> Compose:
    """Lucid's (and torch-lucent's) `standard_transforms`: pad 12, jitter 8, scale 0.9..1.1,
    rotate -10..10 degrees with 0 drawn 6 times in 26, jitter 4."""
    k = image_size / input_size if image_size and input_size else 1.0
    steps: list[Transform] = [
        Pad(_px(12, k), fill=0.5),
        Jitter(_px(8, k)),
        RandomScale([1 + (i - 5) / 50 for i in range(11)]),
        RandomRotate(list(range(-10, 11)) + 5 * [0]),
        Jitter(_px(4, k)),
    ]
    if input_size is not None:
        steps.append(Resize(input_size))
    return Compose(steps)


def no_transforms(input_size: Optional[int] = None, image_size: Optional[int] = None) -> Compose:
    """No augmentation; only the resize to the model's input size (if given)."""
    return Compose([Resize(input_size)] if input_size is not None else [])


PRESETS = {"standard": standard_transforms, "lucid": lucid_transforms, "none": no_transforms}


def get_transforms(spec, input_size: Optional[int] = None, image_size: Optional[int] = None) -> Transform:
    """A preset name ('standard', 'lucid', 'none'), a Transform, or a list of transforms.

    A user list gets the final resize to `input_size` appended unless it already ends in one.
    """
    if spec is None:
        spec = "standard"
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise UserError(f"unknown transforms {spec!r} (expected one of {', '.join(PRESETS)})")
        return PRESETS[spec](input_size, image_size)
    if isinstance(spec, Transform):
        return spec
    steps = list(spec)
    if input_size is not None and not (steps and isinstance(steps[-1], Resize)):
        steps.append(Resize(input_size))
    return Compose(steps)
