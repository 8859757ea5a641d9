"""Dataset examples: per unit, the top-k most positive and most negative images of a folder.

The shared streaming pass (`vizsuite.stream`, a `TopExamples` reducer per layer) keeps, per
unit, only k entries each way (value, image index, position of the spatial max/min), so memory
is bounded by units x k, not by the folder. A second pass reloads just the winning images (at
most 2 x k x units of them) to cut each unit's receptive-field crop around its max position.
The pass is cached by content (weights fingerprint, image list, preprocessing, layer, units, k).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import UserError
from ..fileio import atomic_path, write_json
from ..hashing import image_list_signature, model_fingerprint
from ..images import find_images, load_image, resize_center_crop, to_array
from ..stream import ChannelStats, TopExamples, stream, unit_maps
from ..units import Unit
from .receptive import ReceptiveField, receptive_fields


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
    # the unit's activation map over each crop (U x k x S x S x 4 RGBA uint8), when computed
    pos_overlays: Optional[np.ndarray] = None
    neg_overlays: Optional[np.ndarray] = None
    # per unit: mean over every image and position, and (mean of the top-k maxima - mean) / std
    mean: Optional[np.ndarray] = None
    selectivity: Optional[np.ndarray] = None

    def row(self, unit: int) -> int:
        return self.units.index(int(unit))

    def examples(self, unit: int, sign: str = "pos") -> list[dict]:
        """[{value, image, y, x, crop}] best first for one unit ('pos' or 'neg')."""
        r = self.row(unit)
        vals, imgs, yx = (getattr(self, f"{sign}_{n}") for n in ("value", "image", "yx"))
        crops = self.pos_crops if sign == "pos" else self.neg_crops
        return [{"value": float(vals[r, i]), "image": self.images[imgs[r, i]], "y": int(yx[r, i, 0]),
                 "x": int(yx[r, i, 1]), "crop": crops[r, i]} for i in range(self.k) if imgs[r, i] >= 0]

    # notebooks (docs/notebook.md): a unit's top examples show themselves in a cell
    def _repr_html_(self) -> str:
        from ..display import grid_html

        parts = []
        for u in self.units[:16]:
            rows = self.examples(u, "pos")
            parts.append(grid_html([r["crop"] for r in rows], [f"{Path(r['image']).name}: {r['value']:.3g}"
                                                              for r in rows], title=f"{self.layer}:{u}", px=96))
        more = f"<div>... and {len(self.units) - 16} more units</div>" if len(self.units) > 16 else ""
        return "".join(parts) + more

    def save_crops(self, unit: int, out_dir: str | Path, prefix: str = "", full: bool = False) -> dict[str, list[dict]]:
        """Write one PNG per example crop (and its activation overlay when computed);
        {'pos'|'neg': [{file, value, image, overlay, full, box}]} (files relative). With `full`,
        the whole images are written once each as `full_<index>.jpg` (save_full_images)."""
        out: dict[str, list[dict]] = {}
        r = self.row(unit)
        size = int(self.meta.get("size") or 0)
        for sign in ("pos", "neg"):
            rows = []
            overlays = getattr(self, f"{sign}_overlays")
            for i, ex in enumerate(self.examples(unit, sign)):
                name = f"{prefix}{sign}_{i}.png"
                with atomic_path(Path(out_dir) / name) as tmp:
                    Image.fromarray(ex["crop"]).save(tmp, format="PNG")
                row = {"file": name, "value": ex["value"], "image": Path(ex["image"]).name}
                if overlays is not None and overlays[r, i, ..., 3].any():
                    row["overlay"] = f"{prefix}{sign}_{i}_map.png"
                    with atomic_path(Path(out_dir) / row["overlay"]) as tmp:
                        Image.fromarray(overlays[r, i]).save(tmp, format="PNG")
                if full and size:
                    idx = int(getattr(self, f"{sign}_image")[r, i])
                    row["full"] = f"full_{idx}.jpg"
                    top, left, side = self.rf.box(ex["y"], ex["x"], size)
                    row["box"] = [round(top / size, 4), round(left / size, 4), round(side / size, 4)]
                rows.append(row)
            out[sign] = rows
        return out

    def save_full_images(self, out_dir: str | Path, units: Optional[Sequence[int]] = None) -> list[str]:
        """Every image some example of `units` comes from, as the model saw it (resized,
        centre-cropped), once each: `full_<index>.jpg`; returns the file names."""
        size, crop_pct = int(self.meta.get("size") or 0), float(self.meta.get("crop_pct") or 1.0)
        rows = [self.row(u) for u in (units if units is not None else self.units)]
        wanted = sorted({int(i) for a in (self.pos_image, self.neg_image) for i in a[rows].ravel() if i >= 0})
        names = []
        for idx in wanted:
            image = _load_rgb(self.images[idx], size, crop_pct) if size else None
            if image is None:
                continue
            name = f"full_{idx}.jpg"
            with atomic_path(Path(out_dir) / name) as tmp:
                Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp, format="JPEG", quality=85)
            names.append(name)
        return names

    # ---- storage: one .npz (arrays) + one .json (the rest), both written atomically
    _ARRAYS = ("pos_value", "pos_image", "pos_yx", "neg_value", "neg_image", "neg_yx", "pos_crops", "neg_crops")
    _OPTIONAL = ("pos_overlays", "neg_overlays", "mean", "selectivity")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = {n: getattr(self, n) for n in self._ARRAYS + self._OPTIONAL if getattr(self, n) is not None}
        with atomic_path(path.with_suffix(".npz")) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        write_json(path.with_suffix(".json"), {"layer": self.layer, "units": self.units, "k": self.k,
                                               "images": self.images, "rf": self.rf.as_dict(), "meta": self.meta})
        return path.with_suffix(".npz")

    @classmethod
    def load(cls, path: str | Path) -> "DatasetExamples":
        path = Path(path)
        info = json.loads(path.with_suffix(".json").read_text("utf-8"))
        with np.load(path.with_suffix(".npz")) as data:
            arrays = {n: data[n] for n in cls._ARRAYS + cls._OPTIONAL if n in data}
        return cls(info["layer"], info["units"], info["k"], info["images"], ReceptiveField(**info["rf"]),
                   meta=info.get("meta", {}), **arrays)


def _load_rgb(path, size: int, crop_pct: float) -> Optional[np.ndarray]:
    try:
        return to_array(resize_center_crop(load_image(path), size, crop_pct))
    except UserError:
        return None


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


def activation_overlay(amap: np.ndarray, rf: ReceptiveField, y: int, x: int, image_size: int, out_px: int,
                       sign: float = 1.0) -> np.ndarray:
    """The unit's activation map (h x w) drawn over the crop `crop_field(..., y, x, out_px)`
    cuts: out_px x out_px RGBA uint8, each crop pixel coloured by the map at that image point
    (bilinear; transparent off the map), opacity by sqrt(`sign * value` / the map's peak) (orange
    for positive examples, blue for negative)."""
    h, w = amap.shape
    top, left, side = rf.box(y, x, image_size)
    at = (np.arange(out_px) + 0.5) * side / out_px - 0.5  # crop pixel -> image coordinate offset
    fy, fx = (top + at - rf.offset) / rf.jump, (left + at - rf.offset) / rf.jump

    def axis(f, n):
        inside = (f >= -0.5) & (f <= n - 0.5)
        f = np.clip(f, 0, n - 1)
        i0 = np.floor(f).astype(int)
        i1 = np.minimum(i0 + 1, n - 1)
        return i0, i1, (f - i0), inside

    y0, y1, wy, iny = axis(fy, h)
    x0, x1, wx, inx = axis(fx, w)
    a = sign * amap.astype(np.float64)
    top_row = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom_row = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    vals = top_row * (1 - wy)[:, None] + bottom_row * wy[:, None]
    peak = max(float(a.max()), 1e-12)
    alpha = np.clip(vals / peak, 0, 1) * (iny[:, None] & inx[None, :])
    out = np.zeros((out_px, out_px, 4), np.uint8)
    out[..., :3] = (234, 88, 12) if sign >= 0 else (29, 78, 216)
    out[..., 3] = (np.sqrt(alpha) * 230 + 0.5).astype(np.uint8)  # sqrt: the spread around a peak stays visible
    return out


def compute_dataset_examples(model, layers: Sequence[str], paths: Sequence[str | os.PathLike], *, k: int = 8,
                             units: Optional[dict[str, Sequence]] = None, batch_size: int = 16,
                             crop_px: int = 64, progress: bool = True,
                             cache_dir: Optional[str | os.PathLike] = None,
                             overlays: bool = False) -> dict[str, DatasetExamples]:
    """One `stream` pass over `paths` for all `layers` (a `TopExamples` and a `ChannelStats`
    reducer per layer; units default: every channel), then the winning images' receptive-field
    crops (and, with `overlays`, each unit's activation map over its crop)."""
    if k < 1:
        raise UserError("k must be at least 1")
    paths = [str(p) for p in paths]
    size, crop_pct = model.input_size, model.spec.crop_pct
    rfs = receptive_fields(model, layers)
    tops = {layer: TopExamples(layer, None if not units or layer not in units else
                               [u if isinstance(u, Unit) else Unit(layer, int(u)) for u in units[layer]], k)
            for layer in layers}
    stats = {layer: ChannelStats(layer) for layer in layers}
    info = stream(model, paths, list(tops.values()) + list(stats.values()), batch_size=batch_size,
                  progress=progress, desc="dataset examples", cache_dir=cache_dir)

    # second pass: only the winning images, each loaded once
    crops = {layer: {s: np.zeros((len(t.units), k, crop_px, crop_px, 3), np.uint8) for s in ("pos", "neg")}
             for layer, t in tops.items()}
    wants: dict[int, list] = {}
    for layer, t in tops.items():
        for sign, top in (("pos", t.pos), ("neg", t.neg)):
            for r in range(top.images.shape[0]):
                for c in range(k):
                    i = int(top.images[r, c])
                    if i >= 0:
                        wants.setdefault(i, []).append((layer, sign, r, c, int(top.yx[r, c, 0]), int(top.yx[r, c, 1])))
    maps = {layer: {s: np.zeros((len(t.units), k, crop_px, crop_px, 4), np.uint8) for s in ("pos", "neg")}
            for layer, t in tops.items()} if overlays else None
    for i in sorted(wants):
        image = _load_rgb(paths[i], size, crop_pct)
        if image is None:
            continue
        acts = _example_maps(model, image, tops, wants[i]) if overlays else {}
        for layer, sign, r, c, y, x in wants[i]:
            crops[layer][sign][r, c] = crop_field(image, rfs[layer], y, x, crop_px)
            amap = acts.get((layer, r))
            if amap is not None and rfs[layer].spatial:
                maps[layer][sign][r, c] = activation_overlay(amap, rfs[layer], y, x, size, crop_px,
                                                             1.0 if sign == "pos" else -1.0)

    out = {}
    for layer, t in tops.items():
        p, n = t.pos, t.neg
        mean = sel = None
        if all(u.is_channel for u in t.units) and stats[layer].sum is not None:
            idx = np.array(t.channels, dtype=int)
            mean = stats[layer].mean.numpy()[idx]
            std = np.sqrt(stats[layer].var.numpy()[idx])
            top = p.values.numpy().astype(np.float64)
            best = np.where(np.isfinite(top), top, np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                sel = (np.nanmean(best, axis=1) - mean) / np.where(std > 0, std, np.nan)
        out[layer] = DatasetExamples(
            layer, t.channels, k, paths, rfs[layer],
            p.values.numpy(), p.images.numpy(), p.yx.numpy(),
            -n.values.numpy(), n.images.numpy(), n.yx.numpy(),
            crops[layer]["pos"], crops[layer]["neg"],
            meta={"skipped": info.skipped, "crop_px": crop_px, "size": size, "crop_pct": crop_pct},
            pos_overlays=maps[layer]["pos"] if maps else None, neg_overlays=maps[layer]["neg"] if maps else None,
            mean=mean, selectivity=sel)
    return out


def _example_maps(model, image: np.ndarray, tops: dict, wants: list) -> dict:
    """{(layer, unit row): the unit's h x w map on this image} for the (layer, row) it wins."""
    import torch

    from ..hooks import activations

    layers = sorted({w[0] for w in wants})
    device = next((b.device for b in model.buffers()), torch.device("cpu"))
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None].to(device)
    acts = activations(model, x, layers)
    out = {}
    for layer in layers:
        rows = sorted({w[2] for w in wants if w[0] == layer})
        units = [tops[layer].units[r] for r in rows]
        maps = unit_maps(acts[layer].float(), units)[0]
        if maps.dim() != 3:
            continue
        for r, m in zip(rows, maps.cpu().numpy()):
            out[(layer, r)] = m
    return out


def dataset_examples(model, layers: Sequence[str], images: str | os.PathLike | Sequence, cache_dir: str | os.PathLike,
                     *, k: int = 8, units: Optional[dict[str, Sequence[int]]] = None, batch_size: int = 16,
                     crop_px: int = 64, progress: bool = True) -> dict[str, DatasetExamples]:
    """`compute_dataset_examples` over a folder (or list of paths), the pass cached in `cache_dir`
    by content (model, images, preprocessing, layer, units, k): a rerun streams nothing."""
    paths = find_images(images) if isinstance(images, (str, os.PathLike)) else [Path(p) for p in images]
    return compute_dataset_examples(model, layers, paths, k=k, units=units, batch_size=batch_size,
                                    crop_px=crop_px, progress=progress, cache_dir=cache_dir)


def dataset_task_params(model, layer: str, images_dir: str | os.PathLike, *, k: int = 8,
                        units: Optional[Sequence[int]] = None, crop_px: int = 64, overlays: bool = False) -> dict:
    """Params for a `dataset_examples` task (the image list enters the key via its signature)."""
    paths = find_images(images_dir)
    return {"model": model_fingerprint(model), "layer": layer, "images_dir": str(Path(images_dir).resolve()),
            "images_signature": image_list_signature(paths), "k": int(k), "crop_px": int(crop_px),
            "units": None if units is None else [_unit_param(u) for u in units],
            **({"overlays": True} if overlays else {})}  # absent when off: earlier builds' keys still match


def _unit_param(u):
    """A channel stays its index (the keys of existing builds); another unit is its record."""
    if isinstance(u, Unit) and not (u.is_channel and u.y is None):
        return u.to_json()
    return int(u.index if isinstance(u, Unit) else u)
