"""Receptive fields of any layer of any CNN, measured, not derived from the architecture.

The gradient of one centre activation w.r.t. the input, through the linearized network
(linear.py), is non-zero exactly on that position's receptive field. Two neighbouring positions
give the jump (stride in input pixels); the support's centre gives the offset. The input grows
until the field no longer touches the border (or `max_size` is reached: `clipped`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch

from ..hooks import Hooks
from ..hashing import model_fingerprint
from .linear import linearized


@dataclass(frozen=True)
class ReceptiveField:
    """size: pixels per side; jump: input pixels between neighbouring positions; offset: input
    coordinate of position 0's centre. `spatial` False for layers without H x W (whole image)."""

    size: int
    jump: int
    offset: float
    clipped: bool = False
    spatial: bool = True

    def center(self, y: int, x: int) -> tuple[float, float]:
        return self.offset + y * self.jump, self.offset + x * self.jump

    def box(self, y: int, x: int, image_size: int) -> tuple[int, int, int]:
        """(top, left, side) of the square field of position (y, x); whole image if not spatial."""
        if not self.spatial:
            return 0, 0, image_size
        cy, cx = self.center(y, x)
        half = (self.size - 1) / 2
        return int(round(cy - half)), int(round(cx - half)), self.size

    def as_dict(self) -> dict:
        return asdict(self)


_CACHE: dict[tuple, ReceptiveField] = {}


def _support(grad: torch.Tensor) -> tuple[int, int, int, int]:
    mask = grad.abs().sum(dim=(0, 1)) > 0  # H x W
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0:
        return -1, -1, -1, -1
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def receptive_fields(model, layers: Sequence[str], *, start_size: Optional[int] = None,
                     max_size: Optional[int] = None, seed: int = 0) -> dict[str, ReceptiveField]:
    """{layer: ReceptiveField}; cached per (weights fingerprint, layer, sizes).

    `max_size` defaults to twice the model's input size: a field wider than that is wider than
    any crop of the image we could show, so measuring it exactly is wasted compute.
    """
    fp = model_fingerprint(model)
    size = key_size = max(32, int(start_size or getattr(model, "input_size", 224)))
    max_size = int(max_size or 2 * size)
    out: dict[str, ReceptiveField] = {}
    todo = []
    for layer in dict.fromkeys(layers):
        hit = _CACHE.get((fp, layer, size, max_size))
        if hit is not None:
            out[layer] = hit
        else:
            todo.append(layer)
    gen = torch.Generator().manual_seed(seed)
    device = next((b.device for b in model.buffers()), torch.device("cpu"))
    with torch.enable_grad():  # callers may be inside no_grad (dataset pass)
        while todo:
            todo, size = _measure_round(model, todo, size, max_size, gen, device, out, fp, key_size)
    return {layer: out[layer] for layer in dict.fromkeys(layers)}


def _measure_round(model, todo, size, max_size, gen, device, out, fp, key_size):
    """One input size: measure every layer in `todo`; return the ones to retry bigger."""
    x = torch.rand(1, 3, size, size, generator=gen).to(device).requires_grad_(True)
    with linearized(model), Hooks(model, todo, stop_early=True) as cap:
        acts = cap(x)
    retry = []
    for layer in todo:
        act = acts[layer]
        if act.dim() != 4:
            out[layer] = ReceptiveField(size, size, (size - 1) / 2, clipped=True, spatial=False)
            continue
        _, c, h, w = act.shape
        weights = torch.randn(c, generator=gen).to(act)  # random mix: no channel cancels another
        cy, cx = h // 2, w // 2
        (g0,) = torch.autograd.grad((act[0, :, cy, cx] * weights).sum(), x, retain_graph=True)
        y0, y1, x0, x1 = _support(g0)
        touches = y0 <= 0 or x0 <= 0 or y1 >= size - 1 or x1 >= size - 1
        if touches and size * 2 <= max_size:
            retry.append(layer)
            continue
        if h > 1 and cy + 1 < h:
            (g1,) = torch.autograd.grad((act[0, :, cy + 1, cx] * weights).sum(), x, retain_graph=True)
            jump = max(1, _support(g1)[0] - y0) if not touches else max(1, round(size / h))
        else:
            jump = size
        if touches:  # clipped: extent measured only up to the border; assume centred grid
            extent, offset = max(y1 - y0, x1 - x0) + 1, (size - 1) / 2 - (h - 1) / 2 * jump
        else:
            extent, offset = max(y1 - y0, x1 - x0) + 1, (y0 + y1) / 2 - cy * jump
        out[layer] = ReceptiveField(int(extent), int(jump), float(offset), clipped=touches)
    for layer in todo:
        if layer in out:
            _CACHE[(fp, layer, key_size, max_size)] = out[layer]
    return retry, size * 2


def receptive_field(model, layer: str, **kwargs) -> ReceptiveField:
    """The ReceptiveField of one layer (see receptive_fields)."""
    return receptive_fields(model, [layer], **kwargs)[layer]
