"""One streaming activation pass over a folder of images, with pluggable reducers (docs/stream.md).

    top = TopExamples("blocks.4", k=8)
    stats = ChannelStats("blocks.4")
    info = stream(model, "photos/", [top, stats], cache_dir=".cache/stream")

The pass loads images lazily in batches (bounded memory: a folder larger than RAM works), runs
the model once per batch as far as the deepest layer any reducer reads (on a frozen
`capture.inference_copy`, batch norms folded outside the read layers), and hands each batch to
every reducer, which keeps only its own summary (top-k lists, sampled vectors, running sums).
Unreadable images are skipped and counted. With `cache_dir`, each reducer's state is stored
under a key of everything that determines it (model fingerprint, image list, preprocessing,
the reducer's own parameters), so a rerun, or another command asking the same, recomputes
nothing.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from .errors import UserError
from .hashing import content_hash, image_list_signature, model_fingerprint
from .units import CHANNELS, Unit, check_shape

STREAM_VERSION = 1


@dataclass
class Batch:
    """What a reducer sees of one batch: `indices` into the image list, the images as the
    model saw them (N x 3 x S x S in [0, 1]), {layer: activation}, and the logits when a reducer
    asked for them (with the graph, when one asked for gradients)."""

    indices: list[int]
    images: torch.Tensor
    acts: dict
    logits: Optional[torch.Tensor] = None


class Reducer:
    """Summarizes a stream of batches. Subclasses set `layers` (what they read), `needs_logits` /
    `needs_grad`, and implement `update`; `key()` (JSON data, or None: never cached), `state()`
    and `load()` (dicts of numpy arrays) make them cacheable."""

    layers: tuple[str, ...] = ()
    needs_logits: bool = False
    needs_grad: bool = False
    #: accepts augmented views (several batch rows with the same image index); reducers that
    #: go back to the image file (crops of top examples) do not
    views_ok: bool = False

    def start(self, paths: Sequence[Path]) -> None:
        """Called once before the first batch with the whole image list."""

    def update(self, batch: Batch) -> None:
        raise NotImplementedError

    def key(self) -> Optional[dict]:
        return None

    def state(self) -> dict:
        raise NotImplementedError

    def load(self, state: dict) -> None:
        raise NotImplementedError


@dataclass
class PassInfo:
    """How a pass went: images in the list, skipped (unreadable), reducers reused from the cache."""

    images: int
    skipped: int = 0
    reused: int = 0
    computed: int = 0
    seconds: float = 0.0


def image_batches(paths: Sequence, size: int, crop_pct: float, batch_size: int, augment: Optional[tuple] = None):
    """(indices, tensor) batches of images resized and centre-cropped as the model sees them;
    an unreadable image yields ([i], None). augment=(views, seed): each image is read as
    `images.augmented_views` (its index repeated once per view)."""
    from .images import augmented_views, load_image, resize_center_crop, to_array

    idx, arrays = [], []
    for i, p in enumerate(paths):
        try:
            img = load_image(p)
            imgs = augmented_views(img, augment[0], augment[1], i) if augment else [img]
            views = [to_array(resize_center_crop(v, size, crop_pct)) for v in imgs]
        except UserError:
            yield [i], None
            continue
        for arr in views:
            idx.append(i)
            arrays.append(arr)
            if len(arrays) < batch_size:
                continue
            yield idx, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            idx, arrays = [], []
    if arrays:
        yield idx, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _paths(images) -> list[Path]:
    from .images import find_images

    if isinstance(images, (str, os.PathLike)):
        return find_images(images)
    return [Path(p) for p in images]


def stream(model, images, reducers: Sequence[Reducer], *, batch_size: int = 16, progress: bool = True,
           desc: str = "activations", cache_dir: Optional[str | os.PathLike] = None,
           fast: bool = True, augment: Optional[tuple[int, int]] = None) -> PassInfo:
    """Run the pass for `reducers` over `images` (a folder or a list of paths); see module doc.

    fast: run on the frozen inference copy (batch norms folded outside the read layers).
    augment: (views, seed) reads each image as `images.augmented_views` (itself, its mirror,
    seeded crops), for reducers that accept views (`Reducer.views_ok`)."""
    from tqdm import tqdm

    from .capture import frozen_copy
    from .hooks import Hooks

    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    paths = _paths(images)
    if not paths:
        raise UserError("no images to stream activations from")
    if augment is not None and (augment[0] <= 1):
        augment = None  # one view is the image itself
    if augment is not None:
        refused = [type(r).__name__ for r in reducers if not r.views_ok]
        if refused:
            raise UserError(f"{', '.join(refused)} cannot read augmented views")
    start = time.perf_counter()
    info = PassInfo(len(paths))
    size, crop_pct = model.input_size, model.spec.crop_pct
    cache = Path(cache_dir) if cache_dir is not None else None
    keys = {}
    if cache is not None:
        base = [STREAM_VERSION, model_fingerprint(model), image_list_signature(paths), size, crop_pct, fast]
        if augment is not None:  # keys of unaugmented passes stay what they were
            base.append(["augment", int(augment[0]), int(augment[1])])
        for r in reducers:
            k = r.key()
            if k is not None:
                keys[id(r)] = content_hash(base, type(r).__name__, k)
    todo = []
    for r in reducers:
        if id(r) in keys and _load(r, cache / f"{keys[id(r)]}.npz"):
            info.reused += 1
        else:
            todo.append(r)
    if not todo:
        info.seconds = time.perf_counter() - start
        return info
    layers = list(dict.fromkeys(layer for r in todo for layer in r.layers))
    logits = any(r.needs_logits or r.needs_grad for r in todo)
    grad = any(r.needs_grad for r in todo)
    device = model.mean.device
    net = model
    if fast:  # output checked even for a reading pass: the same copy then serves gradient passes
        net = frozen_copy(model, keep=layers, output=True)
    for r in todo:
        r.start(paths)
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False)
    seen = 0
    with Hooks(net, layers, stop_early=not logits, detach=not grad) as h:
        for idx, batch in image_batches(paths, size, crop_pct, batch_size, augment):
            if batch is None:
                info.skipped += 1
                bar.update(1)
                continue
            x = batch.to(device)
            if grad:  # weights are frozen: the graph must start at the input
                x.requires_grad_(True)
            with torch.set_grad_enabled(grad):
                acts = h(x) if layers else {}
                out = h.output if layers else (net(x) if logits else None)
                b = Batch(idx, batch, acts, out)
                for r in todo:
                    r.update(b)
            seen += len(idx)
            bar.update(len(set(idx)) if augment else len(idx))
    bar.close()
    if not seen:
        raise UserError("no readable images")
    for r in todo:
        if id(r) in keys:
            _save(r, cache / f"{keys[id(r)]}.npz")
    info.computed = len(todo)
    info.seconds = time.perf_counter() - start
    return info


def _load(reducer: Reducer, path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            reducer.load({k: z[k] for k in z.files})
        return True
    except (FileNotFoundError, KeyError, ValueError, OSError):
        return False


def _save(reducer: Reducer, path: Path) -> None:
    from .fileio import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **reducer.state())


# ---------------------------------------------------------------- reducers

def _unit_maps(act: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """N x U [x H x W]: each unit's feature map, one encode per basis (channels: a gather)."""
    if all(u.is_channel for u in units):
        return act.index_select(1, torch.tensor([u.index for u in units], dtype=torch.long, device=act.device))
    encoded: dict = {}
    maps = []
    for u in units:
        if u.is_channel:
            maps.append(u.map(act))
            continue
        if u.basis not in encoded:   # one encode per basis (a TopK feature needs all of them anyway)
            check_shape(u, act)
            encoded[u.basis] = u.basis.encode(act)
        maps.append(encoded[u.basis][:, u.index])
    return torch.stack(maps, dim=1)


def unit_maps(act: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """N x U [x H x W]: each unit's map in a layer's activation (channels, or basis features)."""
    return _unit_maps(act, units)


class TopExamples(Reducer):
    """Per unit, the k images where it is largest and the k where it is smallest (spatial max /
    min and its position), keeping only k entries each way: memory is units x k.

    Arrays [unit row, rank]; image -1 marks an empty slot (fewer images than k)."""

    def __init__(self, layer: str, units: Optional[Sequence[Unit]] = None, k: int = 8):
        if k < 1:
            raise UserError("k must be at least 1")
        self.layer, self.k = layer, int(k)
        self.layers = (layer,)
        self.units = None if units is None else [u if isinstance(u, Unit) else Unit(layer, int(u)) for u in units]
        self.pos = self.neg = None

    def key(self):
        return {"layer": self.layer, "k": self.k,
                "units": None if self.units is None else [u.to_json() for u in self.units]}

    def update(self, batch: Batch) -> None:
        act = batch.acts[self.layer].float().cpu()
        if self.units is None:
            self.units = [Unit(self.layer, i, basis=CHANNELS) for i in range(act.shape[1])]
        if self.pos is None:
            self.pos, self.neg = TopK(len(self.units), self.k), TopK(len(self.units), self.k)
        maps = _unit_maps(act, self.units)
        ids = torch.tensor(batch.indices, dtype=torch.long)
        v, yx = _extremes(maps, largest=True)
        self.pos.update(v, ids, yx)
        v, yx = _extremes(maps, largest=False)
        self.neg.update(-v, ids, yx)  # most negative = largest of the negated minima

    @property
    def channels(self) -> list[int]:
        return [u.index for u in self.units]

    def state(self) -> dict:
        return {"pos_value": self.pos.values.numpy(), "pos_image": self.pos.images.numpy(),
                "pos_yx": self.pos.yx.numpy(), "neg_value": (-self.neg.values).numpy(),
                "neg_image": self.neg.images.numpy(), "neg_yx": self.neg.yx.numpy(),
                "units": np.array([u.index for u in self.units])}

    def load(self, state: dict) -> None:
        self.pos, self.neg = TopK(0, self.k), TopK(0, self.k)
        self.pos.values, self.pos.images = torch.from_numpy(state["pos_value"]), torch.from_numpy(state["pos_image"])
        self.pos.yx = torch.from_numpy(state["pos_yx"])
        self.neg.values, self.neg.images = -torch.from_numpy(state["neg_value"]), torch.from_numpy(state["neg_image"])
        self.neg.yx = torch.from_numpy(state["neg_yx"])
        if self.units is None:
            self.units = [Unit(self.layer, int(i)) for i in state["units"]]


class TopK:
    """Running top-k per unit over a stream of (value, image, y, x) candidates; k entries kept."""

    def __init__(self, units: int, k: int):
        self.k = k
        self.values = torch.full((units, k), float("-inf"))
        self.images = torch.full((units, k), -1, dtype=torch.long)
        self.yx = torch.zeros((units, k, 2), dtype=torch.long)

    def update(self, values: torch.Tensor, images: torch.Tensor, yx: torch.Tensor) -> None:
        """values N x U, images N, yx N x U x 2 -> merge, keep the k largest per unit."""
        n, u = values.shape
        all_v = torch.cat([self.values, values.t().float().cpu()], dim=1)
        all_i = torch.cat([self.images, images.cpu().view(1, n).expand(u, n)], dim=1)
        all_yx = torch.cat([self.yx, yx.transpose(0, 1).cpu()], dim=1)
        top = torch.topk(all_v, min(self.k, all_v.shape[1]), dim=1)
        self.values = top.values
        self.images = torch.gather(all_i, 1, top.indices)
        self.yx = torch.gather(all_yx, 1, top.indices.unsqueeze(-1).expand(-1, -1, 2))


def unit_values(act: torch.Tensor, units: Sequence[Unit]) -> torch.Tensor:
    """N x U: each unit's value (`Unit.value`: its position, else its reduction over positions),
    one encode per basis."""
    from .units import reduce_map

    maps = _unit_maps(act, units)
    if maps.dim() == 2:
        return maps
    cols = [maps[:, j, u.y, u.x] if u.y is not None else reduce_map(maps[:, j], u.reduce)
            for j, u in enumerate(units)]
    return torch.stack(cols, dim=1)


def _extremes(maps: torch.Tensor, largest: bool):
    """Per image and unit: the spatial max (or min) and its (y, x)."""
    if maps.dim() == 2:
        return maps, torch.zeros(*maps.shape, 2, dtype=torch.long)
    n, u, h, w = maps.shape
    flat = maps.reshape(n, u, h * w)
    vals, pos = flat.max(dim=2) if largest else flat.min(dim=2)
    return vals, torch.stack([pos // w, pos % w], dim=-1)


class ChannelStats(Reducer):
    """Running per-channel statistics of a layer over every image and position: count, mean,
    variance (float64 sums), and the mean map (C x H x W) for position-wise mean ablation."""

    def __init__(self, layer: str):
        self.layer = layer
        self.layers = (layer,)
        self.n = 0
        self.sum = self.sumsq = self.map_sum = None
        self.images = 0

    def key(self):
        return {"layer": self.layer}

    def update(self, batch: Batch) -> None:
        a = batch.acts[self.layer].detach().double().cpu()
        a4 = a if a.dim() == 4 else a[:, :, None, None]
        if self.sum is None:
            c = a4.shape[1]
            self.sum, self.sumsq = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
            self.map_sum = torch.zeros(a4.shape[1:], dtype=torch.float64)
        self.sum += a4.sum((0, 2, 3))
        self.sumsq += a4.pow(2).sum((0, 2, 3))
        self.map_sum += a4.sum(0)
        self.n += a4.shape[0] * a4.shape[2] * a4.shape[3]
        self.images += a4.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self.sum / max(self.n, 1)

    @property
    def var(self) -> torch.Tensor:
        return (self.sumsq / max(self.n, 1) - self.mean.pow(2)).clamp_min(0)

    @property
    def mean_map(self) -> torch.Tensor:
        return self.map_sum / max(self.images, 1)

    def state(self) -> dict:
        return {"sum": self.sum.numpy(), "sumsq": self.sumsq.numpy(), "map_sum": self.map_sum.numpy(),
                "n": np.array(self.n), "images": np.array(self.images)}

    def load(self, state: dict) -> None:
        self.sum, self.sumsq = torch.from_numpy(state["sum"]), torch.from_numpy(state["sumsq"])
        self.map_sum = torch.from_numpy(state["map_sum"])
        self.n, self.images = int(state["n"]), int(state["images"])


class SpatialSamples(Reducer):
    """Activation vectors sampled at `samples` positions in all, spread evenly over the images
    and seeded (the atlas of a big folder costs what a small one costs; reruns agree). With
    `class_index`, only positions whose attribution to that class is positive are kept
    (gradient x activation at the layer, summed over channels): a class activation atlas."""

    def __init__(self, layer: str, samples: int = 4000, seed: int = 0, class_index: Optional[int] = None):
        if samples < 1:
            raise UserError(f"--samples must be at least 1, got {samples}")
        self.layer, self.samples, self.seed, self.class_index = layer, int(samples), int(seed), class_index
        self.layers = (layer,)
        self.needs_grad = class_index is not None
        self.rows: dict[str, list] = {k: [] for k in ("acts", "image", "y", "x", "attr")}
        self.predicted: list[int] = []
        self.grid: Optional[tuple[int, int]] = None
        self._result: Optional[dict] = None

    def key(self):
        return {"layer": self.layer, "samples": self.samples, "seed": self.seed, "class_index": self.class_index}

    def start(self, paths) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)
        self.per_image = max(1, math.ceil(self.samples / len(paths)))

    def update(self, batch: Batch) -> None:
        act = batch.acts[self.layer]
        if act.dim() != 4:
            raise UserError(f"layer {self.layer} has no spatial positions (output shape {tuple(act.shape[1:])}); "
                            f"pick a convolutional layer (see `vizsuite layers`)")
        if self.class_index is not None:
            logits = batch.logits
            if self.class_index >= logits.shape[1]:
                raise UserError(f"class {self.class_index} out of range ({logits.shape[1]} classes)")
            grad, = torch.autograd.grad(logits[:, self.class_index].sum(), act)
            attr = position_attribution(act.detach(), grad).float().cpu()
            self.predicted += logits.argmax(1).tolist()
        else:
            attr = torch.zeros(act.shape[0], *act.shape[2:])
        act = act.detach().float().cpu()
        n, c, h, w = act.shape
        self.grid = (h, w)
        flat = act.permute(0, 2, 3, 1).reshape(n, h * w, c)
        for i, image in enumerate(batch.indices):
            candidates = torch.arange(h * w)
            if self.class_index is not None:
                candidates = candidates[attr[i].reshape(-1) > 0]
            if len(candidates) == 0:
                continue
            take = candidates[torch.randperm(len(candidates), generator=self.generator)[:self.per_image]]
            take, _ = take.sort()
            self.rows["acts"].append(flat[i, take].numpy())
            self.rows["image"].append(np.full(len(take), image))
            self.rows["y"].append((take // w).numpy())
            self.rows["x"].append((take % w).numpy())
            self.rows["attr"].append(attr[i].reshape(-1)[take].numpy())

    def result(self) -> dict:
        """{acts M x C, image, y, x, attribution} (trimmed to `samples`, seeded)."""
        if self._result is not None:
            return self._result
        if not self.rows["acts"]:
            raise UserError("no positions support the requested class in these images"
                            if self.class_index is not None else "no activations collected")
        out = {"acts": np.concatenate(self.rows["acts"]).astype(np.float32),
               "image": np.concatenate(self.rows["image"]), "y": np.concatenate(self.rows["y"]),
               "x": np.concatenate(self.rows["x"]),
               "attribution": np.concatenate(self.rows["attr"]).astype(np.float32)}
        if len(out["acts"]) > self.samples:  # per-image rounding can overshoot: trim with the same generator
            keep = torch.randperm(len(out["acts"]), generator=self.generator)[:self.samples].sort().values.numpy()
            out = {k: v[keep] for k, v in out.items()}
        self._result = out
        return out

    def state(self) -> dict:
        return {**self.result(), "grid": np.array(self.grid), "predicted": np.array(self.predicted, dtype=np.int64)}

    def load(self, state: dict) -> None:
        self._result = {k: state[k] for k in ("acts", "image", "y", "x", "attribution")}
        self.grid = tuple(int(v) for v in state["grid"])
        self.predicted = [int(v) for v in state["predicted"]]


def position_attribution(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Gradient x activation summed over channels: N x C x H x W -> N x H x W (Building Blocks)."""
    return (acts * grads).sum(1)
