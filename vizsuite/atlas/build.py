"""Build an activation atlas site: collect -> 2-D layout -> grid -> icons + class support -> page.

Collection plus layout is one cached task (its key hashes the image bytes), icons are cached
in chunks, so an interrupted or repeated build redoes only what is missing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import UserError
from ..analysis.layout import METHODS, available_method, bin_grid, cell_means
from ..tasks import make_task, model_fingerprint, run_tasks
from ..tasks.atlas import LAYOUT_KIND
from .icons import IconRecipe, render_cell_icons



@dataclass
class AtlasConfig:
    """Everything that shapes an atlas besides model, layer and images."""

    grid: int = 20
    samples: int = 4000
    min_count: int = 3
    seed: int = 0
    class_label: Optional[str] = None
    reduce: str = "auto"
    icon: IconRecipe = field(default_factory=IconRecipe)
    icon_batch: int = 16
    patches: int = 4
    cell_px: int = 80
    top_classes: int = 5
    progress: bool = True
    cache: Optional[Path] = None  # task cache (default SITE/.cache/tasks)
    #: execution options for run_tasks (jobs, loader, executor, ray_address, gpus_per_worker)
    run: dict = field(default_factory=dict)

    def run_options(self, model) -> dict:
        """run_tasks keywords: the loaded model in-process, else a recipe workers load."""
        opts = dict(self.run)
        local = opts.get("executor", "local") == "local" and (opts.get("jobs") or 1) <= 1
        return {**opts, "model": model if local else None, "progress": self.progress}

    def validate(self) -> None:
        if self.grid < 1:
            raise UserError(f"--grid must be at least 1, got {self.grid}")
        if self.samples < 1:
            raise UserError(f"--samples must be at least 1, got {self.samples}")
        if self.min_count < 1:
            raise UserError(f"--min-count must be at least 1, got {self.min_count}")
        if self.reduce not in METHODS:
            raise UserError(f"unknown --reduce {self.reduce!r}: choose from {', '.join(METHODS)}")
        if self.icon.steps < 1:
            raise UserError(f"--steps must be at least 1, got {self.icon.steps}")
        if self.icon.size < 16:
            raise UserError(f"--icon-size must be at least 16, got {self.icon.size}")
        if self.patches < 0:
            raise UserError(f"--patches must be 0 or more, got {self.patches}")


def file_digest(path: Path) -> str:
    """Content hash of an image file (the layout task's key must change when a photo does)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:  # unreadable (permissions), vanished, a folder...
        raise UserError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return h.hexdigest()[:24]


def _representatives(acts: np.ndarray, members: np.ndarray, mean: np.ndarray, k: int) -> np.ndarray:
    """The k members closest (cosine) to the cell's mean: the patches that best show the cell."""
    a = acts[members]
    cos = a @ mean / (np.linalg.norm(a, axis=1) * np.linalg.norm(mean) + 1e-8)
    return members[np.argsort(-cos, kind="stable")[:k]]


def build_atlas(model, layer: str, paths: Sequence[Path], site: Path, config: AtlasConfig,
                command: Optional[list[str]] = None) -> dict:
    """Build the atlas site in `site`; return a summary (cells, samples, seconds, ...)."""
    from ..images import save_png
    from .pages import copy_file, write_atlas_site
    from ..analysis.samples import check_spatial
    from ..analysis.support import PatchSource, class_support, patch_strip

    start = time.perf_counter()
    config.validate()
    check_spatial(model, layer)  # unknown or non-spatial layer -> UserError before any work
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no images given")
    class_index = model.class_index(config.class_label) if config.class_label else None
    site = Path(site)
    cache = Path(config.cache) if config.cache else site / ".cache" / "tasks"

    reduce = available_method() if config.reduce == "auto" else config.reduce  # key the concrete method
    layout_task = make_task(LAYOUT_KIND, model=model_fingerprint(model), layer=layer,
                            paths=[str(p.resolve()) for p in paths], digests=[file_digest(p) for p in paths],
                            input_size=model.input_size, crop_pct=model.spec.crop_pct, samples=config.samples,
                            seed=config.seed, class_index=class_index, reduce=reduce)
    res = run_tasks([layout_task], cache, desc="layout", **config.run_options(model)).result(layout_task)
    with np.load(res.path("layout.npz")) as z:
        acts, coords, image, ys, xs = z["acts"], z["coords"], z["image"], z["y"], z["x"]
        grid_hw = tuple(int(v) for v in z["grid"])

    cells = bin_grid(coords, config.grid, config.min_count)
    if not cells:
        raise UserError(f"no grid cell has {config.min_count} or more samples "
                        f"({len(acts)} samples on a {config.grid}x{config.grid} grid): "
                        f"use a smaller --grid, a lower --min-count or more --samples/images")
    means = cell_means(acts, cells)
    support = class_support(model, layer, means, acts.mean(0), top=config.top_classes)
    counts = {"computed": int(res.computed), "reused": int(not res.computed)}  # the layout task, then icons
    icons = render_cell_icons(model, layer, means, cache, config.icon, config.seed, config.icon_batch,
                              config.progress, run=config.run_options(model), counts=counts)

    source = PatchSource(paths, model.input_size, model.spec.crop_pct)
    cell_data, items = [], []
    for cell, mean, classes, (icon_path, value) in zip(cells, means, support, icons):
        cid = f"{cell.row}_{cell.col}"
        icon_file = f"icons/cell_{cid}.png"
        copy_file(icon_path, site / icon_file)
        patch_file = None
        refs = []
        if config.patches:
            chosen = _representatives(acts, cell.members, mean, config.patches)
            strip = patch_strip([source.patch(int(image[i]), int(ys[i]), int(xs[i]), grid_hw) for i in chosen])
            patch_file = f"patches/cell_{cid}.png"
            save_png(strip.astype(np.float32) / 255.0, site / patch_file)
            refs = [{"image": paths[int(image[i])].name, "y": int(ys[i]), "x": int(xs[i])} for i in chosen]
        entry = {"id": cid, "row": cell.row, "col": cell.col, "count": cell.count, "file": icon_file,
                 "patches": patch_file, "sources": refs, "classes": classes, "value": value}
        cell_data.append(entry)
        items.append({**entry, "model": model.name, "layer": layer, "objective": "direction",
                      "seed": config.seed, "steps": config.icon.steps, "size": config.icon.size})
    data = {"model": model.name, "layer": layer, "grid": config.grid, "cell_px": config.cell_px,
            "samples": int(len(acts)), "images": len(paths), "reduce": res.value.reduce, "seed": config.seed,
            "target": model.label(class_index) if class_index is not None else None,
            "min_count": config.min_count, "icon": config.icon.as_dict(), "cells": cell_data}
    write_atlas_site(site, data, items, command)
    return {"cells": len(cells), "samples": int(len(acts)), "reduce": res.value.reduce,
            "seconds": time.perf_counter() - start, "site": str(site), **counts}
