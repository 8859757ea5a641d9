"""Concept examples and what the shared streaming pass keeps of them (docs/concepts.md).

A concept is a folder of example images; random counterexample sets are folders too, or seeded
subsets drawn from one pool folder. Activations come from `vizsuite.stream.stream` with the two
reducers here, cached under `cache_dir` per folder and layer set, so a rerun with another
target class, another concept or more runs recomputes none of the activations it already has.

Representations of a layer's activation (N x C x H x W) as one vector per image:
- "pooled": the mean over positions (C values); a CAV is a direction in channel space and is
  saved as a `units.Directions` basis exactly;
- "flat": every value (C*H*W), the convention of the TCAV paper and captum.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..stream import Batch, Reducer, stream

REPRESENTATIONS = ("pooled", "flat")


def check_representation(representation: str) -> str:
    if representation not in REPRESENTATIONS:
        raise UserError(f"unknown representation {representation!r} (expected one of {', '.join(REPRESENTATIONS)})")
    return representation


def vectors(act: torch.Tensor, representation: str) -> torch.Tensor:
    """One vector per image: N x C [x H x W] -> N x C (pooled) or N x C*H*W (flat)."""
    if act.dim() == 2 or representation == "flat":
        return act.reshape(act.shape[0], -1)
    return act.flatten(2).mean(2)


def sensitivity_vectors(grad: torch.Tensor, representation: str) -> torch.Tensor:
    """Gradient in the representation's coordinates: the directional derivative of the class
    logit along a CAV v is <this, v>. Pooled: moving every position by v changes the logit by
    the sum over positions of grad . v, so the gradient is summed over positions."""
    if grad.dim() == 2 or representation == "flat":
        return grad.reshape(grad.shape[0], -1)
    return grad.flatten(2).sum(2)


MASK_SUFFIX = "_mask"


@dataclass
class Concept:
    """A named set of example images (a folder, or a subset of one). `masks`: for a spatial
    concept, one mask file per image (None: the whole image), where the concept is."""

    name: str
    paths: list
    folder: Optional[str] = None
    masks: Optional[list] = None

    def __len__(self) -> int:
        return len(self.paths)


def concept_from_folder(name: str, folder) -> Concept:
    """A concept from a folder of images; UserError when it is missing or empty. Image + mask
    pairs (`NAME.png` and `NAME_mask.png`, white where the concept is) make a spatial concept:
    its activations are read inside the mask only."""
    from ..images import find_images

    d = Path(folder)
    if not d.is_dir():
        raise UserError(f"concept {name!r}: folder {folder} not found")
    try:
        found = find_images(d)
    except UserError:
        raise UserError(f"concept {name!r}: no images in {folder}") from None
    masks = {p.with_name(p.stem[:-len(MASK_SUFFIX)]): p for p in found if p.stem.endswith(MASK_SUFFIX)}
    paths = [p for p in found if not p.stem.endswith(MASK_SUFFIX)]
    if not paths:
        raise UserError(f"concept {name!r}: no images in {folder} (only masks)")
    if not masks:
        return Concept(name, paths, str(d))
    return Concept(name, paths, str(d), [masks.get(p.with_suffix("")) for p in paths])


def mask_weights(mask_path, size: int, crop_pct: float, hw: tuple) -> torch.Tensor:
    """A mask file as the model sees its image (resized and centre-cropped the same way), averaged
    down to the layer's H x W: the fraction of each position's area inside the mask."""
    from ..images import load_image, resize_center_crop

    m = resize_center_crop(load_image(mask_path).convert("L").convert("RGB"), size, crop_pct)
    t = torch.from_numpy(np.asarray(m, dtype=np.float32)[..., 0] / 255.0)[None, None]
    return torch.nn.functional.adaptive_avg_pool2d(t, hw)[0, 0]


def random_sets(folders: Sequence, runs: Optional[int], size: int, seed: int = 0) -> list[Concept]:
    """Random counterexample sets: several folders are the sets themselves; one folder (or
    several with `runs` given) is a pool from which `runs` seeded subsets of `size` images
    (at most half the pool) are drawn."""
    from ..images import find_images

    if not folders:
        raise UserError("give random counterexample images: --random DIR (a pool folder, or several folders)")
    pools = []
    for f in folders:
        d = Path(f)
        if not d.is_dir():
            raise UserError(f"random folder {f} not found")
        try:
            pools.append(find_images(d))
        except UserError:
            raise UserError(f"random folder {f}: no images") from None
    if len(pools) > 1 and runs is None:
        return [Concept(f"random{i}", p, str(f)) for i, (p, f) in enumerate(zip(pools, folders))]
    runs = 10 if runs is None else int(runs)
    if runs < 3:
        raise UserError(f"--runs must be at least 3 (a t-test needs several random runs), got {runs}")
    pool = sorted({str(p) for ps in pools for p in ps})
    size = min(int(size), len(pool) // 2)
    if size < 2:
        raise UserError(f"the random pool has {len(pool)} image(s); drawing random sets needs at least 4")
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for i in range(runs):
        take = torch.randperm(len(pool), generator=g)[:size].sort().values.tolist()
        out.append(Concept(f"random{i}", [Path(pool[j]) for j in take], None))
    return out


# ---------------------------------------------------------------- reducers

class LayerVectors(Reducer):
    """Per image, each layer's activation as one vector (pooled or flat), float32, image order.
    `vectors[layer]` is N x D (N: readable images; `indices` their positions in the list).
    masks: one mask file (or None) per image of the list: pooled vectors are then the mean over
    the mask's positions (weighted by how much of each lies inside), flat ones are zero outside."""

    def __init__(self, layers: Sequence[str], representation: str = "pooled", masks: Optional[Sequence] = None,
                 size: int = 0, crop_pct: float = 1.0):
        self.layers = tuple(layers)
        self.representation = check_representation(representation)
        self.masks = None if masks is None else [None if m is None else str(m) for m in masks]
        self.size, self.crop_pct = int(size), float(crop_pct)
        self.rows: dict = {layer: [] for layer in self.layers}
        self.index: list[int] = []
        self.vectors: dict = {}
        self.shapes: dict = {}   # layer -> activation shape without the batch (C[, H, W])
        self.info = None   # the stream's PassInfo (what was computed, what came from the cache)

    def key(self):
        from ..hashing import image_list_signature

        masks = None if self.masks is None else image_list_signature([m for m in self.masks if m])
        return {"layers": list(self.layers), "representation": self.representation, "masks": masks,
                "which": None if self.masks is None else [m is not None for m in self.masks]}

    def update(self, batch: Batch) -> None:
        for layer in self.layers:
            a = batch.acts[layer]
            if not isinstance(a, torch.Tensor) or a.dim() not in (2, 4):
                raise UserError(f"layer {layer} does not output N x C [x H x W] activations")
            self.shapes[layer] = tuple(a.shape[1:])
            a = a.detach().float()
            if self.masks is not None and a.dim() == 4:
                self.rows[layer].append(self._masked(a, batch.indices).cpu())
            else:
                self.rows[layer].append(vectors(a, self.representation).cpu())
        self.index += list(batch.indices)
        self.vectors = {}

    def _masked(self, a: torch.Tensor, indices) -> torch.Tensor:
        w = torch.ones(a.shape[0], *a.shape[2:])
        for row, i in enumerate(indices):
            if self.masks[i] is not None:
                w[row] = mask_weights(self.masks[i], self.size, self.crop_pct, tuple(a.shape[2:]))
        w = w.to(a.device)[:, None]
        if self.representation == "flat":
            return (a * w).flatten(1)
        total = w.flatten(2).sum(2)
        if bool((total <= 0).any()):
            bad = [self.masks[i] for row, i in enumerate(indices) if float(total[row]) <= 0]
            raise UserError(f"mask {bad[0]} is empty (no white pixels)")
        return (a * w).flatten(2).sum(2) / total

    def result(self) -> dict:
        if not self.vectors:
            self.vectors = {layer: torch.cat(r).numpy() for layer, r in self.rows.items() if r}
        return self.vectors

    def state(self) -> dict:
        return {**{f"v{i}": self.result()[layer] for i, layer in enumerate(self.layers)},
                **{f"s{i}": np.array(self.shapes[layer], dtype=np.int64) for i, layer in enumerate(self.layers)},
                "index": np.array(self.index, dtype=np.int64)}

    def load(self, state: dict) -> None:
        self.vectors = {layer: state[f"v{i}"] for i, layer in enumerate(self.layers)}
        self.shapes = {layer: tuple(int(v) for v in state[f"s{i}"]) for i, layer in enumerate(self.layers)}
        self.index = [int(i) for i in state["index"]]


class ClassGradients(Reducer):
    """Per image, d logit[class] / d layer activation in the representation's coordinates
    (`sensitivity_vectors`), and the activation vectors themselves (for per-image concept
    presence): plain layer gradients, as captum's LayerGradientXActivation(multiply_by_inputs=False)."""

    needs_grad = True

    def __init__(self, layers: Sequence[str], class_index: int, representation: str = "pooled"):
        self.layers = tuple(layers)
        self.class_index = int(class_index)
        self.representation = check_representation(representation)
        self.grads: dict = {layer: [] for layer in self.layers}
        self.acts: dict = {layer: [] for layer in self.layers}
        self.logits: list = []
        self.index: list[int] = []
        self._done: Optional[dict] = None
        self.info = None

    def key(self):
        return {"layers": list(self.layers), "class": self.class_index, "representation": self.representation}

    def update(self, batch: Batch) -> None:
        logits = batch.logits
        if logits is None or logits.dim() != 2:
            raise UserError("TCAV needs a model that outputs N x classes logits")
        if not 0 <= self.class_index < logits.shape[1]:
            raise UserError(f"class {self.class_index} out of range (model has {logits.shape[1]} classes: "
                            f"0..{logits.shape[1] - 1})")
        acts = [batch.acts[layer] for layer in self.layers]
        # other reducers of the same pass (other classes) read the same graph: keep it
        grads = torch.autograd.grad(logits[:, self.class_index].sum(), acts, retain_graph=True, allow_unused=True)
        for layer, a, g in zip(self.layers, acts, grads):
            if g is None:
                raise UserError(f"the class logit does not depend on layer {layer}")
            self.grads[layer].append(sensitivity_vectors(g.detach().double(), self.representation).cpu())
            self.acts[layer].append(vectors(a.detach().float(), self.representation).cpu())
        self.logits.append(logits[:, self.class_index].detach().double().cpu())
        self.index += list(batch.indices)
        self._done = None

    def result(self) -> dict:
        """{"grads": {layer: N x D float64}, "acts": {layer: N x D}, "logits": N}."""
        if self._done is None:
            self._done = {"grads": {k: torch.cat(v).numpy() for k, v in self.grads.items()},
                          "acts": {k: torch.cat(v).numpy() for k, v in self.acts.items()},
                          "logits": torch.cat(self.logits).numpy()}
        return self._done

    def state(self) -> dict:
        r = self.result()
        out = {"index": np.array(self.index, dtype=np.int64), "logits": r["logits"]}
        for i, layer in enumerate(self.layers):
            out[f"g{i}"], out[f"a{i}"] = r["grads"][layer], r["acts"][layer]
        return out

    def load(self, state: dict) -> None:
        self._done = {"grads": {layer: state[f"g{i}"] for i, layer in enumerate(self.layers)},
                      "acts": {layer: state[f"a{i}"] for i, layer in enumerate(self.layers)},
                      "logits": state["logits"]}
        self.index = [int(i) for i in state["index"]]


def layer_vectors(model, paths: Sequence, layers: Sequence[str], representation: str = "pooled", *,
                  cache_dir: Optional[str | os.PathLike] = None, batch_size: int = 16, progress: bool = False,
                  desc: str = "concept activations", fast: bool = True,
                  masks: Optional[Sequence] = None) -> LayerVectors:
    """One streaming pass (cached) over `paths`: each layer's vectors per readable image
    (inside each image's mask, with `masks`). fast: run on the batch-norm-folded inference copy
    (`capture.frozen_copy`, built once and shared by the passes of one run; False: the model
    as loaded)."""
    r = LayerVectors(layers, representation, masks, model.input_size, model.spec.crop_pct)
    r.info = stream(model, list(paths), [r], batch_size=batch_size, cache_dir=cache_dir, progress=progress,
                    desc=desc, fast=fast)
    return r


def class_gradients(model, paths: Sequence, layers: Sequence[str], classes: Sequence[int],
                    representation: str = "pooled", *, cache_dir=None, batch_size: int = 16,
                    progress: bool = False, fast: bool = True) -> dict:
    """{class: ClassGradients} from one streaming pass (forward once, one backward per class);
    classes already in the cache are not recomputed."""
    reducers = {int(c): ClassGradients(layers, int(c), representation) for c in dict.fromkeys(classes)}
    info = stream(model, list(paths), list(reducers.values()), batch_size=batch_size, cache_dir=cache_dir,
                  progress=progress, desc="class gradients", fast=fast)
    for r in reducers.values():
        r.info = info
    return reducers
