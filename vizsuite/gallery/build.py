"""Gallery build: plan tasks (pure data), run them (resumable, batched), publish assets, write pages.

Task definition (this file's `_Plan`) is separate from task execution (`vizsuite.tasks`), so a
later cluster engine can fan the same task list out. Kinds used:

- `render_unit` (batched by layer): main (`channel`), `negative` and layer `deepdream` images;
- `render_diversity`: a unit's diversity set (the images of one set are coupled);
- `dataset_examples`: one streaming pass per layer over the image folder;
- `unit_circuits` (batched by layer): expanded weights to the previous / next gallery layer,
  heatmaps, and the classes the unit supports;
- `circuit_graph`: a `--circuit` unit with its strongest inputs over two earlier layers.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..capture import list_layers
from ..errors import UserError
from ..images import find_images, save_png
from ..tasks import BuildReport, Task, make_task, model_fingerprint, register_task, run_tasks
from . import pages as P
from .dataset import dataset_task_params
from ..tasks.renders import recipe_with_defaults, unit_render_task


@dataclass
class GalleryConfig:
    """What to build. `units` maps each layer to the unit indices that get neuron pages."""

    layers: list[str]
    units: dict[str, list[int]]
    images: Optional[str] = None  # folder of photos for dataset examples (None: skip them)
    k: int = 6
    fan: int = 4  # strongest inputs/outputs shown per unit
    diversity: int = 4
    top_classes: int = 5
    seed: int = 0
    recipe: dict = field(default_factory=dict)
    circuits: list[tuple[str, int]] = field(default_factory=list)  # extra circuit pages
    circuit_layers: dict[str, list[str]] = field(default_factory=dict)  # unit layer -> 2 earlier layers


# ------------------------------------------------------------------------------ task kinds

@register_task("unit_circuits", batch=64, batch_by=("model", "layer", "prev", "next", "fan", "top_classes",
                                                    "images_dir"))
def unit_circuits(tasks, ctxs) -> list[dict[str, Any]]:
    """Strongest inputs (prev layer) with heatmaps, strongest outputs (next layer), classes —
    for a batch of units of one layer (expanded weights of all of them in one pass)."""
    from . import circuits as C

    model, t0 = ctxs[0].model, tasks[0]
    layer, fan, units = t0["layer"], int(t0["fan"]), [int(t["unit"]) for t in tasks]
    metas: list[dict[str, Any]] = [{"inputs": [], "outputs": [], "classes": []} for _ in tasks]
    for key, other, weights in (
            ("inputs", t0.get("prev"), lambda: C.expanded_weights_into_many(model, t0["prev"], layer, units)),
            ("outputs", t0.get("next"), lambda: C.expanded_weights_out_of_many(model, layer, units, t0["next"]))):
        if not other:
            continue
        for meta, ctx, ew in zip(metas, ctxs, weights()):
            scale = float(ew.kernels.abs().max()) or 1.0  # one scale per unit: heatmaps comparable
            for ch, w in ew.top(fan):
                name = f"{key}_{ch}.png"
                save_png(C.weight_heatmap(ew.kernels[ch], 48, scale) / 255.0, ctx.path(name))
                meta[key].append({"unit": ch, "weight": w, "heatmap": name})
    if t0["top_classes"]:
        images = None
        if t0.get("images_dir"):
            # the true network's derivative at real photos: a fully linearized deep net
            # over-amplifies (scores ~1e9) and ranks classes poorly
            from ..images import load_batch

            paths = find_images(t0["images_dir"])[:8]
            images = load_batch(paths, model.input_size, model.spec.crop_pct)
        support = C.class_support(model, layer, units, images=images, top=int(t0["top_classes"]))
        for meta, u in zip(metas, units):
            meta["classes"] = [{"index": c, "label": model.label(c), "score": s} for c, s in support[u]]
    return metas


@register_task("circuit_graph")
def circuit_graph(task, ctx) -> dict[str, Any]:
    """A unit and its strongest inputs over the given earlier layers: levels and weighted edges."""
    from . import circuits as C

    levels, edges = C.circuit(ctx.model, task["layers"], int(task["unit"]), int(task["fan"]))
    return {"levels": [[list(n) for n in level] for level in levels],
            "edges": [[list(s), list(d), w] for s, d, w in edges]}


# ------------------------------------------------------------------------------ plan

class _Plan:
    """The task list of one build (pure data)."""

    def __init__(self, model, cfg: GalleryConfig):
        self.fp = model_fingerprint(model)
        self.cfg = cfg
        self.recipe = recipe_with_defaults(cfg.recipe)
        self.tasks: list[Task] = []

    def add(self, kind: str, **params) -> Task:
        t = make_task(kind, model=self.fp, **params)
        self.tasks.append(t)
        return t

    def render(self, layer: str, unit: int, objective: str) -> Task:
        # the same task as atlas/explain thumbnails, so their renders are shared
        t = unit_render_task(self.fp, layer, unit, objective, seed=self.cfg.seed, recipe=self.recipe)
        self.tasks.append(t)
        return t

    def diversity(self, layer: str, unit: int) -> Task:
        return self.add("render_diversity", layer=layer, unit=int(unit), count=self.cfg.diversity,
                        seed=self.cfg.seed, recipe=self.recipe)


def _publish(site: Path, report: BuildReport, task: Optional[Task], name: str) -> Optional[P.Img]:
    """Hard-link (or copy) a task's file into site/assets/; an Img pointing at it."""
    res = report.results.get(task.key) if task is not None else None
    if res is None or not res.path(name).is_file():
        return None
    rel = f"assets/{task.key[:2]}/{task.key}/{name}"
    dst = site / rel
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")  # another build may publish it too
        try:
            os.link(res.path(name), tmp)
        except OSError:
            shutil.copy2(res.path(name), tmp)
        os.replace(tmp, dst)
    return P.Img(rel)


def validate_config(model, cfg: GalleryConfig) -> list:
    """Check layers, units, images and circuits before any work; returns the layer listing."""
    from ..capture import Unit, check_unit

    info = list_layers(model)
    for layer in cfg.layers:
        for u in cfg.units.get(layer, []):
            check_unit(Unit(layer, int(u)), info)
    for layer, unit in cfg.circuits:
        check_unit(Unit(layer, int(unit)), info)
        if len(cfg.circuit_layers.get(layer, [])) < 1:
            raise UserError(f"no earlier layer to draw a circuit into {layer}:{unit}; pick a later layer")
    if cfg.images:
        find_images(cfg.images)
    if cfg.diversity < 0 or cfg.k < 1 or cfg.fan < 1:
        raise UserError("--diversity must be >= 0, -k and --fan >= 1")
    return info


def build_gallery(model, site_dir: str | os.PathLike, cfg: GalleryConfig, *, jobs: int = 1,
                  loader: Optional[Callable[[], Any]] = None, progress: bool = True,
                  command: Optional[list[str]] = None) -> BuildReport:
    """Plan, run (reusing SITE/.cache/tasks), and write the site; returns the task report."""
    site = Path(site_dir)
    info = validate_config(model, cfg)
    plan = _Plan(model, cfg)
    layers = list(cfg.layers)
    images_dir = str(Path(cfg.images).resolve()) if cfg.images else None
    dataset = {layer: plan.add("dataset_examples", **{k: v for k, v in dataset_task_params(
        model, layer, cfg.images, k=cfg.k, units=cfg.units[layer]).items() if k != "model"})
        for layer in layers} if cfg.images else {}
    dream = {layer: plan.render(layer, -1, "deepdream") for layer in layers}
    renders, circuits = {}, {}
    for li, layer in enumerate(layers):
        for u in cfg.units[layer]:
            renders[(layer, u)] = {"main": plan.render(layer, u, "channel"),
                                   "negative": plan.render(layer, u, "negative"),
                                   "diversity": plan.diversity(layer, u) if cfg.diversity else None}
            circuits[(layer, u)] = plan.add("unit_circuits", layer=layer, unit=int(u), fan=cfg.fan,
                                            prev=layers[li - 1] if li > 0 else None,
                                            next=layers[li + 1] if li + 1 < len(layers) else None,
                                            top_classes=cfg.top_classes, images_dir=images_dir)
    graphs = {(layer, u): plan.add("circuit_graph", layer=layer, unit=int(u), fan=cfg.fan,
                                   layers=cfg.circuit_layers[layer] + [layer]) for layer, u in cfg.circuits}
    report = _run(plan.tasks, site, jobs, loader, model, progress)
    # second phase: thumbnails of the circuit graphs' nodes (reused when the gallery has them)
    extra = {}
    for key, task in graphs.items():
        for level in report.results[task.key].meta["levels"]:
            for layer, u in level:
                if (layer, u) not in renders and (layer, u) not in extra:
                    extra[(layer, u)] = plan.render(layer, u, "channel")
    if extra:
        more = _run(list(extra.values()), site, jobs, loader, model, progress)
        report.results.update(more.results)
        report.computed += more.computed
        report.reused += more.reused

    def thumb(layer, u):
        r = renders.get((layer, u))
        return _publish(site, report, r["main"] if r else extra.get((layer, u)), "image.png")

    model_info = P.ModelInfo(model.name, [P.LayerSummary(i.name, i.type, i.shape, i.channels, i.default)
                                          for i in info], model.spec.description, model.spec.source,
                             model.spec.licence, model.input_size, plan.fp)
    data = P.SiteData(model_info)
    for layer in layers:
        data.layers.append(P.LayerPage(layer, [P.UnitCard(u, thumb(layer, u)) for u in cfg.units[layer]],
                                       deepdream=_publish(site, report, dream[layer], "image.png")))
    for li, layer in enumerate(layers):
        for u in cfg.units[layer]:
            data.neurons.append(_neuron_page(site, report, layers, li, u, renders[(layer, u)],
                                             circuits[(layer, u)], dataset.get(layer), thumb))
            c = report.results[circuits[(layer, u)].key].meta
            if li > 0 and (layer, u) not in graphs:  # a one-level circuit page from the same data
                levels = [[P.CircuitNode(layer, u, thumb(layer, u))],
                          [P.CircuitNode(layers[li - 1], r["unit"], thumb(layers[li - 1], r["unit"]))
                           for r in c["inputs"]]]
                edges = [P.CircuitEdge((layers[li - 1], r["unit"]), (layer, u), r["weight"]) for r in c["inputs"]]
                data.circuits.append(P.CircuitPage(layer, u, levels, edges))
    for (layer, u), task in graphs.items():
        meta = report.results[task.key].meta
        levels = [[P.CircuitNode(l, x, thumb(l, x)) for l, x in level] for level in meta["levels"]]
        edges = [P.CircuitEdge(tuple(s), tuple(d), w) for s, d, w in meta["edges"]]
        data.circuits.append(P.CircuitPage(layer, u, levels, edges))
    from .site import write_site

    write_site(data, site, command=command)
    return report


def _run(tasks, site, jobs, loader, model, progress) -> BuildReport:
    return run_tasks(tasks, site / ".cache" / "tasks", jobs=jobs, loader=loader,
                     model=model if jobs <= 1 else None, progress=progress, desc="gallery")


def _neuron_page(site, report, layers, li, u, r, circuit_task, dataset_task, thumb) -> P.NeuronPage:
    layer = layers[li]
    c = report.results[circuit_task.key].meta
    div = report.results.get(r["diversity"].key) if r["diversity"] is not None else None
    page = P.NeuronPage(layer, u, main=thumb(layer, u),
                        negative=_publish(site, report, r["negative"], "image.png"),
                        diversity=[i for i in (_publish(site, report, r["diversity"], f)
                                               for f in (div.meta["files"] if div else [])) if i])
    for key, other in (("inputs", layers[li - 1] if li > 0 else None),
                       ("outputs", layers[li + 1] if li + 1 < len(layers) else None)):
        for row in c.get(key, []):
            getattr(page, key).append(P.Connection(other, row["unit"], row["weight"], thumb(other, row["unit"]),
                                                   _publish(site, report, circuit_task, row["heatmap"])))
    page.classes = [P.ClassScore(x["index"], x["label"], x["score"]) for x in c.get("classes", [])]
    if dataset_task is not None:
        d = report.results[dataset_task.key]
        crops = d.meta["crops"].get(str(u), {})
        for sign, target in (("pos", page.positive_examples), ("neg", page.negative_examples)):
            for row in crops.get(sign, []):
                img = _publish(site, report, dataset_task, row["file"])
                if img:
                    target.append(P.Example(img, row["value"], row["image"]))
    return page
