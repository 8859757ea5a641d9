"""Faithfulness by pixel flipping: delete the most relevant patches first, watch the score fall.

AOPC (area over the perturbation curve) = mean over deletion steps of p(x) - p(x_k), with p the
target's softmax probability: the faster an ordering destroys the prediction, the more faithful
the attribution that produced it. A random ordering is the floor to beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class DeletionCurve:
    fractions: list[float]   # share of patches removed at each step (0 .. 1)
    scores: list[float]      # target probability at each step

    @property
    def aopc(self) -> float:
        return sum(self.scores[0] - s for s in self.scores) / len(self.scores)


def patch_order(heat: torch.Tensor, patch: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Patch indices (row-major over the patch grid), most relevant first; random if heat is None."""
    if heat is None:
        raise ValueError("heat map required")
    pooled = torch.nn.functional.avg_pool2d(heat[None, None].float(), patch)[0, 0].flatten()
    if generator is not None:
        return torch.randperm(pooled.numel(), generator=generator)
    return pooled.argsort(descending=True)


def deletion_curve(model, image: torch.Tensor, target: int, order: torch.Tensor, *, patch: int = 16,
                   steps: int = 20, fill: float = 0.5, batch: int = 21) -> DeletionCurve:
    """Delete patches in `order`, `steps` equal chunks; image C x H x W in [0, 1]."""
    c, h, w = image.shape
    gw = w // patch
    n = order.numel()
    counts = [round(n * k / steps) for k in range(steps + 1)]
    versions = []
    for k in counts:
        mask = torch.ones(h, w)
        for idx in order[:k].tolist():
            r, q = divmod(idx, gw)
            mask[r * patch:(r + 1) * patch, q * patch:(q + 1) * patch] = 0
        versions.append(image * mask + fill * (1 - mask))
    scores = []
    with torch.no_grad():
        stack = torch.stack(versions)
        for start in range(0, len(versions), batch):
            probs = torch.softmax(model(stack[start:start + batch]).float(), dim=1)
            scores += probs[:, target].tolist()
    return DeletionCurve([k / n for k in counts], scores)
