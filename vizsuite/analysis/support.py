"""Which classes a cell's mean activation supports, and the source patches it came from."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..hooks import Hooks, replace
from ..images import load_image, resize_center_crop, to_uint8


@torch.no_grad()
def class_support(model, layer: str, vectors: np.ndarray, reference: np.ndarray, *, top: int = 5,
                  chunk: int = 64) -> list[list[dict]]:
    """Top classes each vector supports: the rest of the network run on the vector tiled over
    every position of `layer`, scored by how much it raises each logit over the `reference`
    vector (the mean of all samples) tiled the same way.

    Subtracting the reference removes what every cell shares (class priors, the background
    all positions have), leaving what is particular to the cell. The part of the network before
    `layer` runs on one blank image only; its output is replaced by the tiled vectors.
    """
    device = model.mean.device
    blank = torch.full((1, 3, model.input_size, model.input_size), 0.5, device=device)
    state: dict = {}

    def tiled(output):
        v = state["v"].to(output.device, output.dtype)
        return v[:, :, None, None].expand(-1, -1, *output.shape[2:]).contiguous()

    with Hooks(model, (), [replace(layer, tiled)], stop_early=False):
        def logits_of(vs: np.ndarray) -> torch.Tensor:
            outs = []
            for i in range(0, len(vs), chunk):
                state["v"] = torch.as_tensor(vs[i:i + chunk], dtype=torch.float32)
                outs.append(model(blank).float().cpu())
            return torch.cat(outs)

        ref = logits_of(np.asarray(reference, np.float32)[None])
        cells = logits_of(np.asarray(vectors, np.float32))
    gain = cells - ref
    probs = torch.softmax(cells, dim=1)
    k = min(top, gain.shape[1])
    values, indices = gain.topk(k, dim=1)
    return [[{"index": int(i), "label": model.label(int(i)), "logit_gain": round(float(v), 4),
              "probability": round(float(probs[row, i]), 4)} for v, i in zip(vals, idxs)]
            for row, (vals, idxs) in enumerate(zip(values, indices))]


def patch_box(y: int, x: int, grid: tuple[int, int], size: int, scale: float = 2.0) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of the input around layer position (y, x).

    The box is `scale` strides wide, centred on the position: roughly the part of the image
    the position looks at most (its effective receptive field is larger but fades outwards).
    """
    h, w = grid
    sy, sx = size / h, size / w
    side = int(round(max(sy, sx) * scale))
    cy, cx = (y + 0.5) * sy, (x + 0.5) * sx
    left = int(round(min(max(cx - side / 2, 0), size - side)))
    top = int(round(min(max(cy - side / 2, 0), size - side)))
    return left, top, left + side, top + side


class PatchSource:
    """Crops patches from the photos as the model saw them (resized and centre-cropped)."""

    def __init__(self, paths: Sequence[Path], size: int, crop_pct: float):
        self.paths = list(paths)
        self.size = size
        self.crop_pct = crop_pct
        self._cache: dict[int, np.ndarray] = {}

    def image(self, index: int) -> np.ndarray:
        if index not in self._cache:
            if len(self._cache) > 64:  # bounded memory for big folders
                self._cache.clear()
            img = resize_center_crop(load_image(self.paths[index]), self.size, self.crop_pct)
            self._cache[index] = np.asarray(img)
        return self._cache[index]

    def patch(self, index: int, y: int, x: int, grid: tuple[int, int], out: int = 48) -> np.ndarray:
        """out x out x 3 uint8 crop around (y, x)."""
        from PIL import Image

        left, top, right, bottom = patch_box(y, x, grid, self.size)
        crop = self.image(index)[top:bottom, left:right]
        return np.asarray(Image.fromarray(crop).resize((out, out), Image.BICUBIC))


def patch_strip(patches: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Patches side by side with white gutters (one PNG per cell keeps file counts low)."""
    h = patches[0].shape[0]
    strip = np.full((h, len(patches) * (h + pad) - pad, 3), 255, np.uint8)
    for i, p in enumerate(patches):
        strip[:, i * (h + pad):i * (h + pad) + h] = p
    return strip


def heatmap_rgba(values: np.ndarray, size: int) -> np.ndarray:
    """A signed map (H x W) as a size x size RGBA overlay: red positive, blue negative,
    opacity by magnitude relative to the largest absolute value."""
    from PIL import Image

    v = np.asarray(values, dtype=np.float32)
    m = float(np.abs(v).max()) or 1.0
    n = v / m
    rgba = np.zeros((*v.shape, 4), np.float32)
    rgba[..., 0] = (n > 0)
    rgba[..., 2] = (n < 0)
    rgba[..., 3] = np.abs(n) * 0.8
    img = Image.fromarray(to_uint8(rgba), "RGBA").resize((size, size), Image.NEAREST)
    return np.asarray(img)
