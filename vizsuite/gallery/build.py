"""Gallery build, first version: plan tasks, run them (resumable), publish assets, write the site.

The render seam: every feature-visualization image is a task of kind `config.render_kind` with
params {model, layer, unit, objective, index, seed, recipe} that must write `image.png` into
ctx.out_dir. objective is one of "channel" (main), "negative", "diversity" (index 0..n-1, one
task per image) or "deepdream" (unit = -1). This file registers `placeholder_render` (a cheap
deterministic pattern) so the whole pipeline runs before optvis exists; the lead swaps in
e.g. `render_unit` by registering it and setting GalleryConfig.render_kind.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..capture import list_layers
from ..images import find_images, save_png
from ..tasks import BuildReport, Task, make_task, model_fingerprint, register_task, run_tasks
from . import pages as P
from .dataset import dataset_task_params


@dataclass
class GalleryConfig:
    layers: list[str]
    units: dict[str, list[int]]
    images: Optional[str] = None  # folder of photos for dataset examples (None: skip them)
    k: int = 6
    fan: int = 4  # strongest inputs/outputs shown per unit
    diversity: int = 4
    top_classes: int = 5
    seed: int = 0
    render_kind: str = "placeholder_render"
    recipe: dict = field(default_factory=dict)
    thumb_px: int = 128


# ------------------------------------------------------------------------------ task kinds

@register_task("placeholder_render")
def placeholder_render(task, ctx) -> dict:
    """A deterministic stand-in image (no optimization): colour blobs seeded by the task."""
    rng = np.random.default_rng(int(task.key[:8], 16))
    size = int(task.get("recipe", {}).get("size", 64))
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((size, size, 3))
    for _ in range(4):
        cy, cx, s = rng.random(), rng.random(), 0.05 + 0.2 * rng.random()
        img += rng.random(3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s)[..., None]
    save_png(np.clip(img / max(img.max(), 1e-6), 0, 1), ctx.path("image.png"))
    return {"placeholder": True}


@register_task("unit_circuit")
def unit_circuit(task, ctx) -> dict:
    """Strongest inputs (prev layer) with heatmaps, strongest outputs (next layer), classes."""
    from . import circuits as C

    model, layer, unit, fan = ctx.model, task["layer"], task["unit"], task["fan"]
    meta: dict[str, Any] = {"inputs": [], "outputs": [], "classes": []}
    if task.get("prev"):
        ew = C.expanded_weights_into(model, task["prev"], layer, unit)
        top = ew.top(fan)
        scale = float(ew.kernels.abs().max()) or 1.0
        for ch, w in top:
            name = f"in_{ch}.png"
            save_png(C.weight_heatmap(ew.kernels[ch], 48, scale) / 255.0, ctx.path(name))
            meta["inputs"].append({"unit": ch, "weight": w, "heatmap": name})
    if task.get("next"):
        ew = C.expanded_weights_out_of(model, layer, unit, task["next"])
        scale = float(ew.kernels.abs().max()) or 1.0
        for ch, w in ew.top(fan):
            name = f"out_{ch}.png"
            save_png(C.weight_heatmap(ew.kernels[ch], 48, scale) / 255.0, ctx.path(name))
            meta["outputs"].append({"unit": ch, "weight": w, "heatmap": name})
    if task["top_classes"]:
        images = None
        if task.get("images_dir"):  # true-network derivative at real photos: the fully
            from ..images import load_batch  # linearized deep net over-amplifies (1e9 scores)

            paths = find_images(task["images_dir"])[:8]
            images = load_batch(paths, model.input_size, model.spec.crop_pct)
        for c, s in C.class_support(model, layer, [unit], images=images, top=task["top_classes"])[unit]:
            meta["classes"].append({"index": c, "label": model.label(c), "score": s})
    return meta


# ------------------------------------------------------------------------------ build

class _Plan:
    def __init__(self, model, cfg: GalleryConfig):
        self.fp = model_fingerprint(model)
        self.cfg = cfg
        self.tasks: list[Task] = []

    def add(self, kind: str, **params) -> Task:
        t = make_task(kind, model=self.fp, **params)
        self.tasks.append(t)
        return t

    def render(self, layer: str, unit: int, objective: str, index: int = 0) -> Task:
        return self.add(self.cfg.render_kind, layer=layer, unit=unit, objective=objective, index=index,
                        seed=self.cfg.seed + index, recipe=self.cfg.recipe)


def _publish(site: Path, report: BuildReport, task: Task, name: str) -> Optional[P.Img]:
    """Hard-link (or copy) a task's file into site/assets/; an Img pointing at it."""
    res = report.results.get(task.key)
    if res is None or not res.path(name).is_file():
        return None
    rel = f"assets/{task.key[:2]}/{task.key}/{name}"
    dst = site / rel
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.part")
        try:
            os.link(res.path(name), tmp)
        except OSError:
            shutil.copy2(res.path(name), tmp)
        os.replace(tmp, dst)
    return P.Img(rel)


def build_gallery(model, site_dir: str | os.PathLike, cfg: GalleryConfig, *, jobs: int = 1,
                  loader: Optional[Callable[[], Any]] = None, progress: bool = True,
                  command: Optional[list[str]] = None) -> BuildReport:
    """Plan, run (reusing SITE/.cache/tasks), and write the site; returns the task report."""
    site = Path(site_dir)
    plan = _Plan(model, cfg)
    layers = list(cfg.layers)
    dataset: dict[str, Task] = {}
    if cfg.images:
        find_images(cfg.images)  # bad folder -> UserError before any work
        for layer in layers:
            dataset[layer] = plan.add("dataset_examples", **{k: v for k, v in dataset_task_params(
                model, layer, cfg.images, k=cfg.k, units=cfg.units[layer]).items() if k != "model"})
    dream = {layer: plan.render(layer, -1, "deepdream") for layer in layers}
    renders, circuits = {}, {}
    for li, layer in enumerate(layers):
        for u in cfg.units[layer]:
            renders[(layer, u)] = {"main": plan.render(layer, u, "channel"),
                                   "negative": plan.render(layer, u, "negative"),
                                   "diversity": [plan.render(layer, u, "diversity", i) for i in range(cfg.diversity)]}
            circuits[(layer, u)] = plan.add("unit_circuit", layer=layer, unit=u, fan=cfg.fan,
                                            prev=layers[li - 1] if li > 0 else None,
                                            next=layers[li + 1] if li + 1 < len(layers) else None,
                                            top_classes=cfg.top_classes,
                                            images_dir=str(Path(cfg.images).resolve()) if cfg.images else None)
    report = run_tasks(plan.tasks, site / ".cache" / "tasks", jobs=jobs, loader=loader,
                       model=model if jobs <= 1 else None, progress=progress, desc="gallery")

    def thumb(layer, u):
        r = renders.get((layer, u))
        return _publish(site, report, r["main"], "image.png") if r else None

    info = list_layers(model)
    model_info = P.ModelInfo(model.name, [P.LayerSummary(i.name, i.type, i.shape, i.channels, i.default)
                                          for i in info], model.spec.description, model.spec.source,
                             model.spec.licence, model.input_size, plan.fp)
    data = P.SiteData(model_info)
    for layer in layers:
        data.layers.append(P.LayerPage(layer, [P.UnitCard(u, thumb(layer, u)) for u in cfg.units[layer]],
                                       deepdream=_publish(site, report, dream[layer], "image.png")))
        for u in cfg.units[layer]:
            r, c = renders[(layer, u)], report.results[circuits[(layer, u)].key]
            page = P.NeuronPage(layer, u, main=thumb(layer, u),
                                negative=_publish(site, report, r["negative"], "image.png"),
                                diversity=[i for i in (_publish(site, report, t, "image.png") for t in r["diversity"]) if i])
            li = layers.index(layer)
            for key, other in (("inputs", layers[li - 1] if li > 0 else None),
                               ("outputs", layers[li + 1] if li + 1 < len(layers) else None)):
                for row in c.meta.get(key, []):
                    getattr(page, key).append(P.Connection(other, row["unit"], row["weight"], thumb(other, row["unit"]),
                                                           _publish(site, report, circuits[(layer, u)], row["heatmap"])))
            page.classes = [P.ClassScore(x["index"], x["label"], x["score"]) for x in c.meta.get("classes", [])]
            if layer in dataset:
                d = report.results[dataset[layer].key]
                crops = d.meta["crops"].get(str(u), {})
                for sign, target in (("pos", page.positive_examples), ("neg", page.negative_examples)):
                    for row in crops.get(sign, []):
                        img = _publish(site, report, dataset[layer], row["file"])
                        if img:
                            target.append(P.Example(img, row["value"], row["image"]))
            data.neurons.append(page)
            if li > 0:  # circuit page: the unit, its inputs, their inputs (from the tasks above)
                levels = [[P.CircuitNode(layer, u, thumb(layer, u))]]
                edges = []
                mids = [row["unit"] for row in c.meta.get("inputs", [])]
                levels.append([P.CircuitNode(layers[li - 1], m, thumb(layers[li - 1], m)) for m in mids])
                edges += [P.CircuitEdge((layers[li - 1], row["unit"]), (layer, u), row["weight"])
                          for row in c.meta.get("inputs", [])]
                if li > 1:
                    low = []
                    for m in mids:
                        mc = circuits.get((layers[li - 1], m))
                        for row in (report.results[mc.key].meta.get("inputs", []) if mc else [])[:2]:
                            if (layers[li - 2], row["unit"]) not in low:
                                low.append((layers[li - 2], row["unit"]))
                            edges.append(P.CircuitEdge((layers[li - 2], row["unit"]), (layers[li - 1], m), row["weight"]))
                    if low:  # inputs of unbuilt middle units are not computed: no empty row
                        levels.append([P.CircuitNode(l, x, thumb(l, x)) for l, x in low])
                data.circuits.append(P.CircuitPage(layer, u, levels, edges))
    from .site import write_site

    write_site(data, site, command=command)
    return report
