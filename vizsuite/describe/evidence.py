"""Evidence from data (docs/describe.md#evidence): the model's own classes over each unit's
top-k examples (the shared `stream.TopExamples` reducer), and concept AUROCs.

One streaming pass over the images folder reads the layer and the logits for both; concept and
random folders get one pass each (`UnitValues`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..stream import Batch, Reducer, TopExamples, stream, unit_values
from ..units import Unit
from .records import ClassShare, ConceptScore


class UnitValues(Reducer):
    """Per image: every unit's value (`Unit.value`) and, when the model outputs N x classes,
    its log-probabilities. Rows follow the readable images in order (`image` holds indices)."""

    needs_logits = True

    def __init__(self, layer: str, units: Sequence[Unit]):
        self.layer, self.units = layer, list(units)
        self.layers = (layer,)
        self.rows: list[np.ndarray] = []
        self.logp: list[np.ndarray] = []
        self.image: list[int] = []

    def key(self):
        return {"layer": self.layer, "units": [u.to_json() for u in self.units]}

    def update(self, batch: Batch) -> None:
        self.rows.append(unit_values(batch.acts[self.layer].detach().float(), self.units).double().cpu().numpy())
        if isinstance(batch.logits, torch.Tensor) and batch.logits.dim() == 2:
            self.logp.append(torch.log_softmax(batch.logits.detach().double(), 1).cpu().numpy())
        self.image += list(batch.indices)

    @property
    def values(self) -> np.ndarray:
        return np.concatenate(self.rows) if self.rows else np.zeros((0, len(self.units)))

    @property
    def logprobs(self) -> Optional[np.ndarray]:
        return np.concatenate(self.logp) if self.logp and len(self.logp) == len(self.rows) else None

    def state(self) -> dict:
        out = {"values": self.values, "image": np.array(self.image, dtype=np.int64)}
        if self.logprobs is not None:
            out["logp"] = self.logprobs
        return out

    def load(self, state: dict) -> None:
        self.rows, self.image = [state["values"]], [int(i) for i in state["image"]]
        self.logp = [state["logp"]] if "logp" in state else []


@dataclass
class DataEvidence:
    """What the images folder says about a layer's units (rows follow `units`)."""

    top_classes: list[list[ClassShare]]
    entropy: list[Optional[float]]
    k: int
    values: np.ndarray                     # N x U on the readable images
    concepts: list[list[ConceptScore]]
    concept_directions: dict               # name -> K vector in log-probability space (simulation)


def _short(label: str) -> str:
    return label.split(",")[0].strip()


def class_evidence(model, top: TopExamples, vals: UnitValues, max_classes: int = 3):
    """Per unit: the classes predicted on its top-k examples (count, share, lift over the
    class's share among all images) and the entropy (bits) of that label distribution."""
    logp = vals.logprobs
    if logp is None:
        return [[] for _ in top.units], [None for _ in top.units]
    pred = {img: int(np.argmax(row)) for img, row in zip(vals.image, logp)}
    overall: dict[int, int] = {}
    for c in pred.values():
        overall[c] = overall.get(c, 0) + 1
    n = max(1, len(pred))
    shares, entropies = [], []
    for row in top.pos.images.numpy():
        imgs = [int(i) for i in row if int(i) >= 0 and int(i) in pred]
        counts: dict[int, int] = {}
        for i in imgs:
            counts[pred[i]] = counts.get(pred[i], 0) + 1
        total = max(1, len(imgs))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        out = []
        for c, cnt in ranked[:max_classes]:
            share, base = cnt / total, overall[c] / n
            lift = (share - base) / (1 - base) if base < 1 else 0.0
            label = model.label(c) if hasattr(model, "label") else f"class {c}"
            out.append(ClassShare(c, _short(label), cnt, share, float(max(0.0, lift))))
        shares.append(out)
        p = np.array([cnt / total for _, cnt in ranked]) if ranked else np.array([])
        entropies.append(float(-(p * np.log2(p)).sum()) if len(p) else None)
    return shares, entropies


def folder_values(model, layer: str, units: Sequence[Unit], folder, *, progress: bool, cache_dir=None,
                  desc: str = "activations") -> UnitValues:
    vals = UnitValues(layer, units)
    stream(model, folder, [vals], progress=progress, desc=desc, cache_dir=cache_dir)
    if not len(vals.values):
        raise UserError(f"no readable images in {folder}")
    return vals


def concept_evidence(model, layer: str, units: Sequence[Unit], concepts: Mapping[str, object], random,
                     *, progress: bool, cache_dir=None):
    """Per unit, the AUROC of its value for each concept folder against the random folder;
    and each concept's direction in log-probability space (concept mean minus random mean)."""
    if not concepts:
        return [[] for _ in units], {}
    if random is None:
        raise UserError("concept selectivity needs random images: pass --random DIR")
    from sklearn.metrics import roc_auc_score

    neg = folder_values(model, layer, units, random, progress=progress, cache_dir=cache_dir, desc="random")
    out: list[list[ConceptScore]] = [[] for _ in units]
    directions = {}
    for name, folder in concepts.items():
        pos = folder_values(model, layer, units, folder, progress=progress, cache_dir=cache_dir, desc=name)
        y = np.r_[np.ones(len(pos.values)), np.zeros(len(neg.values))]
        for j in range(len(units)):
            score = np.r_[pos.values[:, j], neg.values[:, j]]
            auc = float(roc_auc_score(y, score)) if np.ptp(score) > 0 else 0.5
            out[j].append(ConceptScore(name, auc, len(pos.values), len(neg.values)))
        if pos.logprobs is not None and neg.logprobs is not None:
            directions[name] = pos.logprobs.mean(0) - neg.logprobs.mean(0)
    return out, directions


def data_evidence(model, units: Sequence[Unit], images=None, *, k: int = 8, concepts=None, random=None,
                  progress: bool = False, cache_dir=None) -> DataEvidence:
    """One pass over `images` (top-k examples + values + predictions), one per concept folder."""
    layer = units[0].layer
    classes, entropy, values, kk = [[] for _ in units], [None for _ in units], np.zeros((0, len(units))), 0
    if images is not None:
        from ..images import find_images

        paths = find_images(images) if not isinstance(images, (list, tuple)) else list(images)
        kk = max(1, min(int(k), math.ceil(len(paths) / 4)))  # top-k a quarter of the folder at most
        top, vals = TopExamples(layer, units, kk), UnitValues(layer, units)
        stream(model, paths, [top, vals], progress=progress, desc="images", cache_dir=cache_dir)
        classes, entropy = class_evidence(model, top, vals)
        values = vals.values
    scores, directions = concept_evidence(model, layer, units, concepts or {}, random, progress=progress,
                                          cache_dir=cache_dir)
    return DataEvidence(classes, entropy, kk, values, scores, directions)
