"""Dataset examples: per unit, the top-k most positive and most negative images of a folder.

One streaming pass (batched, tqdm) over any number of images keeps, per unit, only k entries
each way (value, image index, position of the spatial max/min), so memory is bounded by
units x k, not by the folder. A second pass reloads just the winning images (at most
2 x k x units of them) to cut each unit's receptive-field crop around its max position.
Results are cached on disk keyed by (weights fingerprint, layer, image list, k, crop, units).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ..capture import Capture, inference_copy
from ..errors import UserError
from ..fileio import atomic_path, write_json
from ..images import find_images, load_image, resize_center_crop, to_array
from ..tasks import content_hash, model_fingerprint, register_task
from .receptive import ReceptiveField, receptive_fields


def image_list_signature(paths: Sequence[str | os.PathLike]) -> str:
    """Hash of (resolved path, size, mtime) of every image: cheap, and changes when a file does."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


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


@dataclass
class DatasetExamples:
    """Top-k positive/negative examples for some units of one layer.

    Arrays are indexed [row, rank] with row = position of the unit in `units`; image index -1
    marks an empty slot (fewer images than k). Negative values are the actual (lowest) minima.
    """

    layer: str
    units: list[int]
    k: int
    images: list[str]
    rf: ReceptiveField
    pos_value: np.ndarray
    pos_image: np.ndarray
    pos_yx: np.ndarray
    neg_value: np.ndarray
    neg_image: np.ndarray
    neg_yx: np.ndarray
    pos_crops: np.ndarray  # U x k x S x S x 3 uint8
    neg_crops: np.ndarray
    meta: dict = field(default_factory=dict)

    def row(self, unit: int) -> int:
        return self.units.index(int(unit))

    def examples(self, unit: int, sign: str = "pos") -> list[dict]:
        """[{value, image, y, x, crop}] best first for one unit ('pos' or 'neg')."""
        r = self.row(unit)
        vals, imgs, yx = (getattr(self, f"{sign}_{n}") for n in ("value", "image", "yx"))
        crops = self.pos_crops if sign == "pos" else self.neg_crops
        return [{"value": float(vals[r, i]), "image": self.images[imgs[r, i]], "y": int(yx[r, i, 0]),
                 "x": int(yx[r, i, 1]), "crop": crops[r, i]} for i in range(self.k) if imgs[r, i] >= 0]

    def save_crops(self, unit: int, out_dir: str | Path, prefix: str = "") -> dict[str, list[dict]]:
        """Write one PNG per example crop; {'pos'|'neg': [{file, value, image}]} (file relative)."""
        out: dict[str, list[dict]] = {}
        for sign in ("pos", "neg"):
            rows = []
            for i, ex in enumerate(self.examples(unit, sign)):
                name = f"{prefix}{sign}_{i}.png"
                with atomic_path(Path(out_dir) / name) as tmp:
                    Image.fromarray(ex["crop"]).save(tmp, format="PNG")
                rows.append({"file": name, "value": ex["value"], "image": Path(ex["image"]).name})
            out[sign] = rows
        return out

    # ---- storage: one .npz (arrays) + one .json (the rest), both written atomically
    _ARRAYS = ("pos_value", "pos_image", "pos_yx", "neg_value", "neg_image", "neg_yx", "pos_crops", "neg_crops")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path.with_suffix(".npz")) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **{n: getattr(self, n) for n in self._ARRAYS})
        write_json(path.with_suffix(".json"), {"layer": self.layer, "units": self.units, "k": self.k,
                                               "images": self.images, "rf": self.rf.as_dict(), "meta": self.meta})
        return path.with_suffix(".npz")

    @classmethod
    def load(cls, path: str | Path) -> "DatasetExamples":
        path = Path(path)
        info = json.loads(path.with_suffix(".json").read_text("utf-8"))
        with np.load(path.with_suffix(".npz")) as data:
            arrays = {n: data[n] for n in cls._ARRAYS}
        return cls(info["layer"], info["units"], info["k"], info["images"], ReceptiveField(**info["rf"]),
                   meta=info.get("meta", {}), **arrays)


def _load_rgb(path, size: int, crop_pct: float) -> Optional[np.ndarray]:
    try:
        return to_array(resize_center_crop(load_image(path), size, crop_pct))
    except UserError:
        return None


def _batches(paths: Sequence, size: int, crop_pct: float, batch_size: int):
    """(indices, tensor) batches; unreadable images are skipped (counted by the caller)."""
    idx, arrays = [], []
    for i, p in enumerate(paths):
        arr = _load_rgb(p, size, crop_pct)
        if arr is None:
            yield [i], None
            continue
        idx.append(i)
        arrays.append(arr)
        if len(arrays) == batch_size:
            yield idx, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            idx, arrays = [], []
    if arrays:
        yield idx, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _extremes(act: torch.Tensor, units: torch.Tensor, largest: bool):
    """Per image and unit: the spatial max (or min) and its (y, x)."""
    a = act.index_select(1, units)
    if a.dim() == 2:
        return a, torch.zeros(*a.shape, 2, dtype=torch.long)
    n, u, h, w = a.shape
    flat = a.reshape(n, u, h * w)
    vals, pos = flat.max(dim=2) if largest else flat.min(dim=2)
    return vals, torch.stack([pos // w, pos % w], dim=-1)


def crop_field(image: np.ndarray, rf: ReceptiveField, y: int, x: int, out_px: int) -> np.ndarray:
    """The receptive-field square of position (y, x) from an H x W x 3 [0,1] image, grey outside
    the image, resized to out_px (uint8)."""
    size = image.shape[0]
    top, left, side = rf.box(y, x, size)
    canvas = np.full((side, side, 3), 0.5, np.float32)
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + side, image.shape[0]), min(left + side, image.shape[1])
    if t1 > t0 and l1 > l0:
        canvas[t0 - top:t1 - top, l0 - left:l1 - left] = image[t0:t1, l0:l1]
    img = Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(img.resize((out_px, out_px), Image.BICUBIC if side < out_px else Image.LANCZOS))


@torch.no_grad()
def compute_dataset_examples(model, layers: Sequence[str], paths: Sequence[str | os.PathLike], *, k: int = 8,
                             units: Optional[dict[str, Sequence[int]]] = None, batch_size: int = 16,
                             crop_px: int = 64, progress: bool = True) -> dict[str, DatasetExamples]:
    """One pass over `paths` for all `layers`; {layer: DatasetExamples} (units default: all)."""
    from tqdm import tqdm

    if k < 1:
        raise UserError("k must be at least 1")
    paths = [str(p) for p in paths]
    size, crop_pct = model.input_size, model.spec.crop_pct
    device = model.mean.device
    rfs = receptive_fields(model, layers)
    chosen: dict[str, torch.Tensor] = {}
    pos: dict[str, TopK] = {}
    neg: dict[str, TopK] = {}
    skipped = 0
    bar = tqdm(total=len(paths), desc="dataset examples", unit="img", disable=not progress, file=None)
    # many forward passes: run them on a frozen copy with batch norms folded (checked on a probe)
    fast = inference_copy(model, torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device),
                          keep=layers, output=False)
    with Capture(fast, layers, stop_early=True, detach=True) as cap:
        for idx, batch in _batches(paths, size, crop_pct, batch_size):
            if batch is None:
                skipped += 1
                bar.update(1)
                continue
            acts = cap(batch.to(device))
            for layer in layers:
                act = acts[layer].float().cpu()
                if layer not in chosen:
                    wanted = list(range(act.shape[1])) if not units or layer not in units else list(units[layer])
                    chosen[layer] = torch.tensor(wanted, dtype=torch.long)
                    pos[layer], neg[layer] = TopK(len(wanted), k), TopK(len(wanted), k)
                ids = torch.tensor(idx, dtype=torch.long)
                v, yx = _extremes(act, chosen[layer], largest=True)
                pos[layer].update(v, ids, yx)
                v, yx = _extremes(act, chosen[layer], largest=False)
                neg[layer].update(-v, ids, yx)  # most negative = largest of the negated minima
            bar.update(len(idx))
    bar.close()
    if not chosen:
        raise UserError("no readable images")

    # second pass: only the winning images, each loaded once
    needed = sorted({int(i) for layer in chosen for t in (pos[layer], neg[layer])
                     for i in t.images.flatten().tolist() if i >= 0})
    crops = {layer: {s: np.zeros((len(chosen[layer]), k, crop_px, crop_px, 3), np.uint8) for s in ("pos", "neg")}
             for layer in chosen}
    wants: dict[int, list] = {}
    for layer in chosen:
        for sign, t in (("pos", pos[layer]), ("neg", neg[layer])):
            for r in range(t.images.shape[0]):
                for c in range(k):
                    i = int(t.images[r, c])
                    if i >= 0:
                        wants.setdefault(i, []).append((layer, sign, r, c, int(t.yx[r, c, 0]), int(t.yx[r, c, 1])))
    for i in needed:
        image = _load_rgb(paths[i], size, crop_pct)
        for layer, sign, r, c, y, x in wants[i]:
            crops[layer][sign][r, c] = crop_field(image, rfs[layer], y, x, crop_px)

    out = {}
    for layer in layers:
        p, n = pos[layer], neg[layer]
        out[layer] = DatasetExamples(
            layer, chosen[layer].tolist(), k, paths, rfs[layer],
            p.values.numpy(), p.images.numpy(), p.yx.numpy(),
            -n.values.numpy(), n.images.numpy(), n.yx.numpy(),
            crops[layer]["pos"], crops[layer]["neg"], meta={"skipped": skipped, "crop_px": crop_px})
    return out


def cache_key(fingerprint: str, layer: str, signature: str, k: int, crop_px: int,
              units: Optional[Sequence[int]]) -> str:
    return content_hash("dataset_examples", fingerprint, layer, signature, k, crop_px,
                        None if units is None else [int(u) for u in units])


def dataset_examples(model, layers: Sequence[str], images: str | os.PathLike | Sequence, cache_dir: str | os.PathLike,
                     *, k: int = 8, units: Optional[dict[str, Sequence[int]]] = None, batch_size: int = 16,
                     crop_px: int = 64, progress: bool = True) -> dict[str, DatasetExamples]:
    """Cached `compute_dataset_examples`: a folder (or list of paths); only uncached layers run."""
    paths = find_images(images) if isinstance(images, (str, os.PathLike)) else [Path(p) for p in images]
    fp, sig = model_fingerprint(model), image_list_signature(paths)
    cache = Path(cache_dir)
    keys = {layer: cache_key(fp, layer, sig, k, crop_px, (units or {}).get(layer)) for layer in layers}
    found, missing = {}, []
    for layer, key in keys.items():
        try:
            found[layer] = DatasetExamples.load(cache / key)
        except (FileNotFoundError, KeyError, ValueError, json.JSONDecodeError):
            missing.append(layer)
    if missing:
        fresh = compute_dataset_examples(model, missing, paths, k=k, units=units, batch_size=batch_size,
                                         crop_px=crop_px, progress=progress)
        for layer, ex in fresh.items():
            ex.meta.update(fingerprint=fp, images_signature=sig)
            ex.save(cache / keys[layer])  # npz first, json last: the json marks it complete
            found[layer] = ex
    return {layer: found[layer] for layer in layers}


def dataset_task_params(model, layer: str, images_dir: str | os.PathLike, *, k: int = 8,
                        units: Optional[Sequence[int]] = None, crop_px: int = 64) -> dict:
    """Params for a `dataset_examples` task (the image list enters the key via its signature)."""
    paths = find_images(images_dir)
    return {"model": model_fingerprint(model), "layer": layer, "images_dir": str(Path(images_dir).resolve()),
            "images_signature": image_list_signature(paths), "k": int(k), "crop_px": int(crop_px),
            "units": None if units is None else [int(u) for u in units]}


@register_task("dataset_examples")
def dataset_examples_task(task, ctx) -> dict:
    """Task kind `dataset_examples`: writes examples.npz/.json and pos_/neg_ PNG crops per unit."""
    paths = find_images(task["images_dir"])
    if image_list_signature(paths) != task["images_signature"]:
        raise UserError(f"images in {task['images_dir']} changed since the build was planned; run it again")
    layer = task["layer"]
    units = {layer: task["units"]} if task.get("units") is not None else None
    ex = compute_dataset_examples(ctx.model, [layer], paths, k=task["k"], units=units,
                                  crop_px=task["crop_px"], progress=False)[layer]
    ex.save(ctx.path("examples.npz"))
    files = {str(u): ex.save_crops(u, ctx.out_dir, prefix=f"u{u}_") for u in ex.units}
    return {"units": ex.units, "rf": ex.rf.as_dict(), "crops": files, "skipped": ex.meta.get("skipped", 0)}
