"""Reducers for the shared streaming pass (`stream.stream`): a bounded, seeded reservoir of
activation vectors (training data) and the held-out evaluation (reconstruction metrics and the
model's output with the layer replaced by its reconstruction).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from ..hooks import Hooks, replace
from ..stream import Batch, Reducer
from .metrics import OutputEffect, Reconstruction


def vectors(act: torch.Tensor, layer: str) -> torch.Tensor:
    """N x C [x H x W] -> (N*H*W) x C: one row per position."""
    if act.dim() == 2:
        return act
    if act.dim() != 4:
        raise UserError(f"layer {layer} outputs shape {tuple(act.shape[1:])}: a dictionary needs "
                        f"channel vectors (N x C or N x C x H x W)")
    return act.permute(0, 2, 3, 1).reshape(-1, act.shape[1])


class VectorReservoir(Reducer):
    """At most `budget_bytes` of float32 activation vectors of `layer`: every position of every
    image while they fit, then a uniform seeded sample of all of them (reservoir sampling,
    Vitter's algorithm R, vectorized per batch). `positions`: read only that many seeded random
    positions per image (None: all). Memory is the budget, whatever the folder's size."""

    views_ok = True  # a vector is a vector: augmented views add training data

    def __init__(self, layer: str, budget_bytes: int, seed: int = 0, positions: Optional[int] = None):
        if budget_bytes < 1024:
            raise UserError(f"memory budget too small ({budget_bytes} bytes)")
        if positions is not None and positions < 1:
            raise UserError(f"--positions must be at least 1, got {positions}")
        self.layer, self.budget, self.seed, self.positions = layer, int(budget_bytes), int(seed), positions
        self.layers = (layer,)
        self.buffer: Optional[np.ndarray] = None
        self.seen = 0
        self.filled = 0

    def key(self):
        return {"layer": self.layer, "budget": self.budget, "seed": self.seed, "positions": self.positions}

    def start(self, paths) -> None:
        self.rng = np.random.default_rng(self.seed)   # numpy's: its fancy assignment is ordered (last wins)
        self.generator = torch.Generator().manual_seed(self.seed)

    def update(self, batch: Batch) -> None:
        act = batch.acts[self.layer].detach().float().cpu()
        v = vectors(act, self.layer)
        if self.positions is not None and act.dim() == 4:
            per = act.shape[2] * act.shape[3]
            take = min(self.positions, per)
            rows = [i * per + torch.randperm(per, generator=self.generator)[:take] for i in range(act.shape[0])]
            v = v[torch.cat(rows)]
        v = v.numpy()
        if self.buffer is None:
            cap = max(1, self.budget // (4 * v.shape[1]))
            self.buffer = np.empty((cap, v.shape[1]), dtype=np.float32)
        cap = len(self.buffer)
        free = min(cap - self.filled, len(v))
        if free > 0:
            self.buffer[self.filled:self.filled + free] = v[:free]
            self.filled += free
        rest = v[free:]
        if len(rest):
            t = self.seen + free + np.arange(len(rest))          # 0-based stream index of each row
            slot = (self.rng.random(len(rest)) * (t + 1)).astype(np.int64)
            keep = slot < cap
            self.buffer[slot[keep]] = rest[keep]                # later rows win, as in the sequential algorithm
        self.seen += len(v)

    @property
    def data(self) -> torch.Tensor:
        if self.buffer is None or not self.filled:
            raise UserError("no activation vectors collected")
        return torch.from_numpy(self.buffer[:self.filled])

    @property
    def capacity(self) -> int:
        return 0 if self.buffer is None else len(self.buffer)

    def state(self):
        return {"data": self.buffer[:self.filled], "seen": np.array(self.seen)}

    def load(self, state):
        self.buffer = np.ascontiguousarray(state["data"])
        self.filled, self.seen = len(self.buffer), int(state["seen"])


class HeldOutEval(Reducer):
    """Held-out metrics of a dictionary basis over every position of the images streamed:
    R², L0, feature frequencies, and the model's output when the layer's activation is replaced
    by its reconstruction (`hooks.replace` on `net`, a private inference copy), against the
    clean output of the same copy."""

    needs_logits = False

    def __init__(self, net, layer: str, basis, device="cpu"):
        self.net, self.layer, self.basis, self.device = net, layer, basis, device
        self.layers = ()
        self.recon = Reconstruction(basis.size(basis.channels))
        self.effect = OutputEffect()

    def update(self, batch: Batch) -> None:
        x = batch.images.to(self.device)
        ran = []

        def swap(out):
            # one image at a time: the working memory is one image's codes, not the batch's
            rows = []
            for i in range(out.shape[0]):
                a = out[i:i + 1].float()
                codes = self.basis.encode(a)
                rec = self.basis.decode(codes)
                self.recon.update(vectors(a, self.layer), vectors(rec, self.layer), vectors(codes, self.layer))
                rows.append(rec.to(out.dtype))
                del codes
            ran.append(True)
            return torch.cat(rows)
        with torch.no_grad():
            with Hooks(self.net, (), [replace(self.layer, swap)], stop_early=False):
                edited = self.net(x)
            clean = self.net(x)
        if not ran:
            raise UserError(f"layer {self.layer} did not run in the forward pass")
        self.effect.update(clean, edited)

    def result(self) -> dict:
        return {**self.recon.result(), **self.effect.result()}
