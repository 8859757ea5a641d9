"""Neurons vs dictionary features on the same images (issue 13, item 4; data only, no page yet).

- selectivity: the entropy (bits) of the model's predicted classes over each unit's top-k
  dataset examples; lower = its strongest images agree on a class;
- splitting: for each neuron, how many distinct dictionary features dominate its top-k examples
  (the feature contributing most to that channel at the example's position): a polysemantic
  neuron splits into several.

One streaming pass for the top examples and predictions, one over the top images only.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Optional

import numpy as np
import torch

from ..stream import Batch, Reducer, TopExamples, _paths, stream
from ..units import Dictionary, Unit


class Predictions(Reducer):
    """The predicted class of every image (argmax of the logits)."""

    needs_logits = True

    def __init__(self):
        self.layers = ()
        self.top1: dict[int, int] = {}

    def update(self, batch: Batch) -> None:
        for i, c in zip(batch.indices, batch.logits.argmax(1).tolist()):
            self.top1[i] = int(c)


class PositionVectors(Reducer):
    """The layer's channel vector at given (image, y, x) positions."""

    def __init__(self, layer: str, wanted: dict[int, list[tuple[int, int]]]):
        self.layer, self.wanted = layer, wanted
        self.layers = (layer,)
        self.found: dict[tuple[int, int, int], torch.Tensor] = {}

    def update(self, batch: Batch) -> None:
        act = batch.acts[self.layer].detach().float().cpu()
        for row, i in enumerate(batch.indices):
            for y, x in self.wanted.get(i, ()):
                self.found[(i, y, x)] = act[row, :, y, x] if act.dim() == 4 else act[row]


def entropy_bits(labels) -> float:
    counts = Counter(labels)
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values()) if n else 0.0


def compare(model, layer: str, images, basis: Dictionary, k: int = 8, batch_size: int = 16,
            progress: bool = True, units: Optional[list[int]] = None) -> dict:
    """See module doc. Features that never fire (top value <= 0) are left out of the feature
    statistics."""
    paths = _paths(images)
    channels = basis.channels
    neurons = TopExamples(layer, [Unit(layer, c) for c in range(channels)], k=k)
    feats_idx = list(range(basis.size(channels))) if units is None else list(units)
    features = TopExamples(layer, [Unit(layer, f, basis=basis, reduce="max") for f in feats_idx], k=k)
    preds = Predictions()
    stream(model, paths, [neurons, features, preds], batch_size=batch_size, progress=progress,
           desc="top examples")

    def selectivity(top: TopExamples):
        out = []
        for row in range(top.pos.images.shape[0]):
            ok = (top.pos.images[row] >= 0) & (top.pos.values[row] > 0)
            imgs = top.pos.images[row][ok].tolist()
            out.append(entropy_bits([preds.top1[i] for i in imgs]) if imgs else None)
        return out

    neuron_h, feature_h = selectivity(neurons), selectivity(features)
    # splitting: which feature dominates each neuron's top examples
    wanted: dict[int, list] = {}
    for row in range(channels):
        for rank in range(k):
            i = int(neurons.pos.images[row, rank])
            if i >= 0:
                wanted.setdefault(i, []).append(tuple(neurons.pos.yx[row, rank].tolist()))
    order = sorted(wanted)
    sub = PositionVectors(layer, {j: wanted[i] for j, i in enumerate(order)})
    stream(model, [paths[i] for i in order], [sub], batch_size=batch_size, progress=progress, desc="positions")
    local = {i: j for j, i in enumerate(order)}
    contrib_dir = (basis.decoder * basis.scale).double()           # F x C: feature f's write to channel c
    splits = []
    for row in range(channels):
        dominant = set()
        for rank in range(k):
            i = int(neurons.pos.images[row, rank])
            if i < 0:
                continue
            y, x = neurons.pos.yx[row, rank].tolist()
            v = sub.found[(local[i], y, x)].double()
            codes = basis.encode(v[None])[0]
            contribution = codes * contrib_dir[:, row]
            if float(contribution.max()) > 0:
                dominant.add(int(contribution.argmax()))
        splits.append(len(dominant))

    def mean(values):
        vals = [v for v in values if v is not None]
        return float(np.mean(vals)) if vals else None
    return {"layer": layer, "k": k, "images": len(paths),
            "neuron_entropy_bits": neuron_h, "feature_entropy_bits": feature_h,
            "feature_indices": feats_idx,
            "mean_neuron_entropy_bits": mean(neuron_h), "mean_feature_entropy_bits": mean(feature_h),
            "live_features": sum(h is not None for h in feature_h),
            "features_per_neuron": splits, "mean_features_per_neuron": float(np.mean(splits)) if splits else None}
