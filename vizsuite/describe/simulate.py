"""Scored descriptions (docs/describe.md#simulation): predict a unit's activation on held-out
images from the features its description names, and correlate with the truth.

Images: seeded random square crops (scale 0.3-1, random flips) of the images folder, split by
source image (even sources fit, odd ones are held out). Features a description names:

- a tuning claim: the image's energy in that stimulus: Gabor energy at the preferred
  orientation and period (orientation), mean rectified chroma along the preferred hue (hue),
  mean |correlation| with a tile of the preferred stimulus (curves, dots, checkerboards);
- class claims (top classes, causal support): the model's log-probability of each class;
- a concept claim: the log-probabilities projected on the concept's direction (concept mean
  minus random mean).

A ridge regression (standardized features, alpha 1) fit on the training crops predicts the
held-out ones; the score is Pearson's r (0 when nothing is named). The control fits unit u with
the description of another unit of the layer (a seeded derangement): it must score lower.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from .records import Simulation, UnitDescription
from .stimuli import Stimulus, render

#: working resolution of the image features (px): filters run on crops resized to this
WORK_PX = 112


def views(paths, size: int, per_image: int, generator: torch.Generator):
    """(N*V x 3 x size x size crops in [0, 1], source index per crop)."""
    from ..images import load_image, to_array

    crops, source = [], []
    for i, p in enumerate(paths):
        try:
            img = torch.from_numpy(to_array(load_image(p))).permute(2, 0, 1)
        except UserError:
            continue
        h, w = img.shape[1:]
        side = min(h, w)
        for _ in range(per_image):
            scale = 0.3 + 0.7 * float(torch.rand((), generator=generator))
            s = max(8, int(side * math.sqrt(scale)))
            y = int(torch.randint(0, h - s + 1, (), generator=generator))
            x = int(torch.randint(0, w - s + 1, (), generator=generator))
            c = img[:, y:y + s, x:x + s][None]
            if float(torch.rand((), generator=generator)) < 0.5:
                c = c.flip(-1)
            crops.append(F.interpolate(c, size=(size, size), mode="bilinear", antialias=True,
                                       align_corners=False)[0].clamp(0, 1))
            source.append(i)
    if not crops:
        raise UserError("no readable images to simulate descriptions on")
    return torch.stack(crops), np.array(source)


class FeatureBank:
    """The image features descriptions can name, computed once per (kind, parameters)."""

    def __init__(self, x: torch.Tensor, logprobs: Optional[np.ndarray], concept_directions: dict, size: int):
        self.size = size
        work = min(WORK_PX, x.shape[-1])
        self.scale = work / size
        small = F.interpolate(x.double(), size=(work, work), mode="bilinear", antialias=True, align_corners=False)
        self.rgb = small
        lum = small.mean(1)
        self.lum = lum - lum.mean((-2, -1), keepdim=True)
        self.spectrum = torch.fft.fft2(self.lum)
        self.logprobs, self.directions = logprobs, concept_directions
        self._cache: dict = {}

    def feature(self, kind: str, key) -> Optional[np.ndarray]:
        k = (kind, key)
        if k not in self._cache:
            self._cache[k] = self._compute(kind, key)
        return self._cache[k]

    def _compute(self, kind, key):
        if kind == "class":
            return None if self.logprobs is None else self.logprobs[:, int(key)]
        if kind == "concept":
            d = self.directions.get(key)
            return None if d is None or self.logprobs is None else self.logprobs @ d
        family, value, secondary = key
        if family == "orientation":
            return self._gabor(value, secondary * self.scale)
        if family == "hue":
            from .stimuli import hsv_to_rgb

            c = torch.tensor(hsv_to_rgb(value, max(secondary, 0.33)), dtype=torch.float64)
            c = c - c.mean()
            chroma = self.rgb - self.rgb.mean(1, keepdim=True)
            return (torch.einsum("nchw,c->nhw", chroma, c / c.norm()).clamp_min(0).mean((-2, -1))).numpy()
        return self._template(Stimulus(family, value, secondary, 1.0))

    def _gabor(self, angle: float, period: float) -> np.ndarray:
        n = self.lum.shape[-1]
        f = torch.fft.fftfreq(n, dtype=torch.float64)
        fy, fx = torch.meshgrid(f, f, indexing="ij")
        period = max(period, 2.0)
        t = math.radians(angle)
        f0x, f0y = math.cos(t) / period, math.sin(t) / period
        sigma_f = 1.0 / (2 * math.pi * period)    # spatial envelope: one period
        g = torch.exp(-((fx - f0x) ** 2 + (fy - f0y) ** 2) / (2 * sigma_f ** 2))
        return torch.fft.ifft2(self.spectrum * g).abs().mean((-2, -1)).numpy()

    def _template(self, stim: Stimulus) -> np.ndarray:
        n = self.lum.shape[-1]
        tile = render(stim, self.size).double().mean(0)[None, None]
        tile = F.interpolate(tile, size=(n, n), mode="bilinear", antialias=True, align_corners=False)[0, 0]
        span = {"curve": 3.0 * stim.secondary, "dots": 2.0 * stim.value, "checkerboard": 2.0 * stim.value}
        t = int(min(n, max(3, round(span.get(stim.family, n) * self.scale))))
        c = n // 2
        k = tile[c - t // 2:c - t // 2 + t, c - t // 2:c - t // 2 + t]
        k = k - k.mean()
        if float(k.norm()) == 0:
            return np.zeros(self.lum.shape[0])
        pad = torch.zeros(n, n, dtype=torch.float64)
        pad[:k.shape[0], :k.shape[1]] = k / k.norm()
        corr = torch.fft.ifft2(self.spectrum * torch.conj(torch.fft.fft2(pad))).real
        return corr.abs().mean((-2, -1)).numpy()


def named_features(desc: UnitDescription, bank: FeatureBank) -> tuple[list[str], np.ndarray]:
    """The features a description names, as (names, N x F)."""
    names, cols = [], []
    ev = desc.evidence
    for c in desc.claims:
        if c.kind == "tuning":
            t = ev.family(c.key)
            keys = [((t.family, t.preferred, t.secondary), f"{t.family}@{t.preferred:.0f}")]
        elif c.kind in ("classes", "causal"):
            labels = c.key.split("|")
            pool = ev.top_classes if c.kind == "classes" else ev.causal
            keys = [(x.index, f"class:{x.label}") for x in pool if x.label in labels]
        else:
            keys = [(c.key, f"concept:{c.key}")]
        for key, name in keys:
            kind = "tuning" if c.kind == "tuning" else ("class" if c.kind in ("classes", "causal") else "concept")
            v = bank.feature(kind, key)
            if v is not None and name not in names:
                names.append(name)
                cols.append(np.asarray(v, dtype=np.float64))
    return names, (np.stack(cols, 1) if cols else np.zeros((bank.lum.shape[0], 0)))


def _fit_score(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    if X.shape[1] == 0 or train.sum() < 2 or test.sum() < 2:
        return 0.0
    from sklearn.linear_model import Ridge

    mu, sd = X[train].mean(0), X[train].std(0)
    sd[sd == 0] = 1.0
    Z = (X - mu) / sd
    pred = Ridge(alpha=1.0).fit(Z[train], y[train]).predict(Z[test])
    truth = y[test]
    if np.std(pred) < 1e-12 or np.std(truth) < 1e-12:
        return 0.0
    return float(np.corrcoef(pred, truth)[0, 1])


def derangement(n: int, generator: torch.Generator) -> list[int]:
    """A seeded permutation with no fixed points (n >= 2)."""
    while True:
        p = torch.randperm(n, generator=generator).tolist()
        if all(i != j for i, j in enumerate(p)):
            return p


def simulate(descriptions: Sequence[UnitDescription], values: np.ndarray, bank: FeatureBank,
             source: np.ndarray, generator: torch.Generator) -> list[Simulation]:
    """Per description (units of one layer; `values` N x U their true values on the crops)."""
    groups = np.unique(source)
    if len(groups) >= 2:
        test = np.isin(source, groups[1::2])
    else:
        test = np.arange(len(source)) % 2 == 1
    train = ~test
    feats = [named_features(d, bank) for d in descriptions]
    perm = derangement(len(descriptions), generator) if len(descriptions) >= 2 else None
    out = []
    for j, (names, X) in enumerate(feats):
        y = values[:, j]
        own = _fit_score(X, y, train, test)
        control = _fit_score(feats[perm[j]][1], y, train, test) if perm else float("nan")
        out.append(Simulation(own, control, names, int(train.sum()), int(test.sum())))
    return out
