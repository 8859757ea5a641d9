"""Collect spatial activation vectors (one per sampled position) from a folder of photos.

Sampling is bounded (`samples` positions in total, spread evenly over the images) and seeded,
so the atlas of a big folder costs what the atlas of a small one costs, and reruns agree.
With `class_index`, only positions whose attribution to that class is positive are kept
(gradient x activation at the layer, summed over channels): a class activation atlas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..capture import Capture
from ..errors import UserError
from ..images import load_batch


@dataclass
class Samples:
    """Sampled activation vectors and where they came from (all arrays have one row per sample)."""

    acts: np.ndarray            # M x C float32
    image: np.ndarray           # M int: index into `paths`
    y: np.ndarray               # M int: row in the layer's grid
    x: np.ndarray               # M int: column in the layer's grid
    attribution: np.ndarray     # M float: class attribution of the position (0 without a class)
    paths: list[Path]
    grid: tuple[int, int]       # layer height, width
    input_size: int
    predicted: list[int] = field(default_factory=list)  # top class of each image

    def __len__(self) -> int:
        return len(self.acts)


def position_attribution(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Gradient x activation summed over channels: N x C x H x W -> N x H x W (Building Blocks)."""
    return (acts * grads).sum(1)


def collect(model, layer: str, paths: Sequence[Path], *, samples: int = 4000, seed: int = 0,
            class_index: Optional[int] = None, batch_size: int = 8, progress=None) -> Samples:
    """Sample up to `samples` activation vectors of `layer` (a C x H x W output) over the photos."""
    if samples < 1:
        raise UserError(f"--samples must be at least 1, got {samples}")
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no images to collect activations from")
    generator = torch.Generator().manual_seed(seed)
    per_image = max(1, math.ceil(samples / len(paths)))
    device = model.mean.device
    rows: dict[str, list] = {k: [] for k in ("acts", "image", "y", "x", "attr")}
    predicted: list[int] = []
    grid = None
    with Capture(model, [layer], stop_early=class_index is None, detach=class_index is None) as cap:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            batch = load_batch(chunk, model.input_size, model.spec.crop_pct).to(device)
            if class_index is not None:  # weights are frozen: the graph must start at the input
                batch.requires_grad_(True)
            with torch.set_grad_enabled(class_index is not None):
                act = cap(batch)[layer]
                if act.dim() != 4:
                    raise UserError(f"layer {layer} has no spatial positions (output shape {tuple(act.shape[1:])}); "
                                    f"pick a convolutional layer (see `vizsuite layers`)")
                if class_index is not None:
                    logits = cap.output
                    if class_index >= logits.shape[1]:
                        raise UserError(f"class {class_index} out of range ({logits.shape[1]} classes)")
                    grad, = torch.autograd.grad(logits[:, class_index].sum(), act)
                    attr = position_attribution(act.detach(), grad).float().cpu()
                    predicted += logits.argmax(1).tolist()
                else:
                    attr = torch.zeros(act.shape[0], *act.shape[2:])
            act = act.detach().float().cpu()
            n, c, h, w = act.shape
            grid = (h, w)
            flat = act.permute(0, 2, 3, 1).reshape(n, h * w, c)
            for i in range(n):
                candidates = torch.arange(h * w)
                if class_index is not None:
                    candidates = candidates[attr[i].reshape(-1) > 0]
                if len(candidates) == 0:
                    continue
                take = candidates[torch.randperm(len(candidates), generator=generator)[:per_image]]
                take, _ = take.sort()
                rows["acts"].append(flat[i, take].numpy())
                rows["image"].append(np.full(len(take), start + i))
                rows["y"].append((take // w).numpy())
                rows["x"].append((take % w).numpy())
                rows["attr"].append(attr[i].reshape(-1)[take].numpy())
            if progress is not None:
                progress.update(len(chunk))
    if not rows["acts"]:
        raise UserError("no positions support the requested class in these images"
                        if class_index is not None else "no activations collected")
    out = Samples(acts=np.concatenate(rows["acts"]).astype(np.float32), image=np.concatenate(rows["image"]),
                  y=np.concatenate(rows["y"]), x=np.concatenate(rows["x"]),
                  attribution=np.concatenate(rows["attr"]).astype(np.float32), paths=paths, grid=grid,
                  input_size=model.input_size, predicted=predicted)
    if len(out) > samples:  # per-image rounding can overshoot: trim with the same generator
        keep = torch.randperm(len(out), generator=generator)[:samples].sort().values.numpy()
        out = _subset(out, keep)
    return out


def _subset(s: Samples, keep: np.ndarray) -> Samples:
    return Samples(acts=s.acts[keep], image=s.image[keep], y=s.y[keep], x=s.x[keep],
                   attribution=s.attribution[keep], paths=s.paths, grid=s.grid, input_size=s.input_size,
                   predicted=s.predicted)


def check_spatial(model, layer: str) -> tuple[int, int, int]:
    """(C, H, W) of the layer at the model's input size; UserError unless it is a spatial map."""
    from ..capture import activations

    model.layer(layer)  # unknown layer -> UserError with close matches
    blank = torch.zeros(1, 3, model.input_size, model.input_size, device=model.mean.device)
    act = activations(model, blank, [layer])[layer]
    if act.dim() != 4:
        raise UserError(f"layer {layer} has no spatial positions (output shape {tuple(act.shape[1:])}); "
                        f"pick a convolutional layer (see `vizsuite layers`)")
    return tuple(act.shape[1:])
