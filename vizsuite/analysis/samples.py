"""Collect spatial activation vectors (one per sampled position) from a folder of photos.

Sampling is bounded (`samples` positions in total, spread evenly over the images) and seeded,
so the atlas of a big folder costs what the atlas of a small one costs, and reruns agree.
With `class_index`, only positions whose attribution to that class is positive are kept
(gradient x activation at the layer, summed over channels): a class activation atlas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..stream import SpatialSamples, position_attribution, stream

__all__ = ["Samples", "check_spatial", "collect", "position_attribution"]


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


def collect(model, layer: str, paths: Sequence[Path], *, samples: int = 4000, seed: int = 0,
            class_index: Optional[int] = None, batch_size: int = 16, progress: bool = False,
            cache_dir=None) -> Samples:
    """Sample up to `samples` activation vectors of `layer` (a C x H x W output) over the photos
    (one `stream` pass with a `SpatialSamples` reducer)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no images to collect activations from")
    reducer = SpatialSamples(layer, samples, seed, class_index)
    stream(model, paths, [reducer], batch_size=batch_size, progress=progress, desc="activations",
           cache_dir=cache_dir)
    r = reducer.result()
    return Samples(acts=r["acts"], image=r["image"], y=r["y"], x=r["x"], attribution=r["attribution"],
                   paths=paths, grid=reducer.grid, input_size=model.input_size, predicted=reducer.predicted)


def check_spatial(model, layer: str) -> tuple[int, int, int]:
    """(C, H, W) of the layer at the model's input size; UserError unless it is a spatial map."""
    from ..hooks import activations

    model.layer(layer)  # unknown layer -> UserError with close matches
    blank = torch.zeros(1, 3, model.input_size, model.input_size, device=model.mean.device)
    act = activations(model, blank, [layer])[layer]
    if act.dim() != 4:
        raise UserError(f"layer {layer} has no spatial positions (output shape {tuple(act.shape[1:])}); "
                        f"pick a convolutional layer (see `vizsuite layers`)")
    return tuple(act.shape[1:])
