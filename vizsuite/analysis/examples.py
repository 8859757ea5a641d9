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
from ..stream import TopExamples, stream
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


def compute_dataset_examples(model, layers: Sequence[str], paths: Sequence[str | os.PathLike], *, k: int = 8,
                             units: Optional[dict[str, Sequence]] = None, batch_size: int = 16,
                             crop_px: int = 64, progress: bool = True,
                             cache_dir: Optional[str | os.PathLike] = None) -> dict[str, DatasetExamples]:
    """One `stream` pass over `paths` for all `layers` (a `TopExamples` reducer per layer;
    units default: every channel), then the winning images' receptive-field crops."""
    if k < 1:
        raise UserError("k must be at least 1")
    paths = [str(p) for p in paths]
    size, crop_pct = model.input_size, model.spec.crop_pct
    rfs = receptive_fields(model, layers)
    tops = {layer: TopExamples(layer, None if not units or layer not in units else
                               [u if isinstance(u, Unit) else Unit(layer, int(u)) for u in units[layer]], k)
            for layer in layers}
    info = stream(model, paths, list(tops.values()), batch_size=batch_size, progress=progress,
                  desc="dataset examples", cache_dir=cache_dir)

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
    for i in sorted(wants):
        image = _load_rgb(paths[i], size, crop_pct)
        for layer, sign, r, c, y, x in wants[i]:
            crops[layer][sign][r, c] = crop_field(image, rfs[layer], y, x, crop_px)

    out = {}
    for layer, t in tops.items():
        p, n = t.pos, t.neg
        out[layer] = DatasetExamples(
            layer, t.channels, k, paths, rfs[layer],
            p.values.numpy(), p.images.numpy(), p.yx.numpy(),
            -n.values.numpy(), n.images.numpy(), n.yx.numpy(),
            crops[layer]["pos"], crops[layer]["neg"], meta={"skipped": info.skipped, "crop_px": crop_px})
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
                        units: Optional[Sequence[int]] = None, crop_px: int = 64) -> dict:
    """Params for a `dataset_examples` task (the image list enters the key via its signature)."""
    paths = find_images(images_dir)
    return {"model": model_fingerprint(model), "layer": layer, "images_dir": str(Path(images_dir).resolve()),
            "images_signature": image_list_signature(paths), "k": int(k), "crop_px": int(crop_px),
            "units": None if units is None else [_unit_param(u) for u in units]}


def _unit_param(u):
    """A channel stays its index (the keys of existing builds); another unit is its record."""
    if isinstance(u, Unit) and not (u.is_channel and u.y is None):
        return u.to_json()
    return int(u.index if isinstance(u, Unit) else u)
