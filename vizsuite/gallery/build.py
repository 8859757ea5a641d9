"""Gallery build: plan tasks (pure data), run them (resumable, batched), publish assets, write pages.

Task definition (this file's `_Plan`) is separate from task execution (`vizsuite.tasks`): the
build is one planned task graph, run once (circuit graphs name their nodes' thumbnails when
they finish, through `run_tasks(expand=...)`). Kinds used (registered in `vizsuite.tasks`):

- `render_unit` (batched by layer): main (`channel`), `negative` and layer `deepdream` images;
- `render_diversity`: a unit's diversity set (the images of one set are coupled);
- `dataset_examples`: one streaming pass per layer over the image folder;
- `unit_circuits` (batched by layer): expanded weights to the previous / next gallery layer,
  heatmaps, and the classes the unit supports;
- `circuit_graph`: a `--circuit` unit with its strongest inputs over two earlier layers;
- `model_graph`: the meaningful-layer graph and receptive fields for the index;
- `render_unit` with a spatial unit (`LAYER:K@Y,X`, objective `neuron`): each unit's centre
  neuron page.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ..capture import list_layers
from ..errors import UserError
from ..units import Unit, check_unit
from ..images import find_images
from ..tasks import BuildReport, Task, make_task, model_fingerprint, run_tasks
from . import pages as P
from ..analysis.examples import dataset_task_params
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
    spatial: bool = True  # a spatial-neuron page (the centre position) per unit of a spatial layer


# ------------------------------------------------------------------------------ plan

class _Plan:
    """The task list of one build (pure data)."""

    def __init__(self, model, cfg: GalleryConfig):
        self.model = model
        self.fp = model_fingerprint(model)
        self.cfg = cfg
        self.recipe = recipe_with_defaults(cfg.recipe, model)
        self.tasks: list[Task] = []

    def add(self, kind: str, **params) -> Task:
        t = make_task(kind, model=self.fp, **params)
        self.tasks.append(t)
        return t

    def render(self, layer: str, unit: int, objective: str) -> Task:
        # the same task as atlas/explain thumbnails, so their renders are shared
        t = unit_render_task(self.model, layer, unit, objective, seed=self.cfg.seed, recipe=self.recipe)
        self.tasks.append(t)
        return t

    def diversity(self, layer: str, unit: int) -> Task:
        return self.add("render_diversity", layer=layer, unit=Unit(layer, int(unit)).to_json(), count=self.cfg.diversity,
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
                  command: Optional[list[str]] = None, executor: str = "local",
                  ray_address: Optional[str] = None, gpus_per_worker: float = 0.0) -> BuildReport:
    """Plan, run (reusing SITE/.cache/tasks; locally, in a process pool or on Ray), and write
    the site; returns the task report."""
    site = Path(site_dir)
    info = validate_config(model, cfg)
    plan = _Plan(model, cfg)
    layers = list(cfg.layers)
    images_dir = str(Path(cfg.images).resolve()) if cfg.images else None
    dataset = {layer: plan.add("dataset_examples", **{k: v for k, v in dataset_task_params(
        model, layer, cfg.images, k=cfg.k, units=cfg.units[layer], overlays=True).items() if k != "model"})
        for layer in layers} if cfg.images else {}
    dream = {layer: plan.render(layer, -1, "deepdream") for layer in layers}
    graph_task = plan.add("model_graph", seed=cfg.seed, extra=layers)
    spatial = _plan_spatial(plan, info, cfg) if cfg.spatial else {}
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
    graph_keys = {t.key for t in graphs.values()}
    extra: dict = {}

    def circuit_nodes(task: Task, result) -> list[Task]:
        """A finished circuit graph names the thumbnails of its nodes (the gallery's own are reused)."""
        if task.key not in graph_keys:
            return []
        for layer, u in result.value.nodes():
            if (layer, u) not in renders and (layer, u) not in extra:
                extra[(layer, u)] = plan.render(layer, u, "channel")
        return list(extra.values())

    report = run_tasks(plan.tasks, site / ".cache" / "tasks", jobs=jobs, loader=loader,
                       model=model if jobs <= 1 and executor == "local" else None, progress=progress,
                       desc="gallery", expand=circuit_nodes, executor=executor, ray_address=ray_address,
                       gpus_per_worker=gpus_per_worker)

    def thumb(layer, u):
        r = renders.get((layer, u))
        return _publish(site, report, r["main"] if r else extra.get((layer, u)), "image.png")

    graph = report.results[graph_task.key].value
    model_info = P.ModelInfo(model.name, _layer_summaries(info, graph), model.spec.description,
                             model.spec.source, model.spec.licence, model.input_size, plan.fp, graph=graph)
    data = P.SiteData(model_info)
    for layer in layers:
        data.layers.append(P.LayerPage(layer, _unit_cards(report, layer, cfg.units[layer], thumb, circuits,
                                                          dataset.get(layer)),
                                       deepdream=_publish(site, report, dream[layer], "image.png")))
    data.spatial = _spatial_pages(site, report, spatial, graph)
    for li, layer in enumerate(layers):
        for u in cfg.units[layer]:
            data.neurons.append(_neuron_page(site, report, layers, li, u, renders[(layer, u)],
                                             circuits[(layer, u)], dataset.get(layer), thumb))
            c = report.results[circuits[(layer, u)].key].value
            if li > 0 and (layer, u) not in graphs:  # a one-level circuit page from the same data
                levels = [[P.CircuitNode(layer, u, thumb(layer, u))],
                          [P.CircuitNode(layers[li - 1], r.unit, thumb(layers[li - 1], r.unit)) for r in c.inputs]]
                edges = [P.CircuitEdge((layers[li - 1], r.unit), (layer, u), r.weight) for r in c.inputs]
                data.circuits.append(P.CircuitPage(layer, u, levels, edges))
    for (layer, u), task in graphs.items():
        g = report.results[task.key].value
        levels = [[P.CircuitNode(l, x, thumb(l, x)) for l, x in level] for level in g.levels]
        edges = [P.CircuitEdge(tuple(s), tuple(d), w) for s, d, w in g.edges]
        data.circuits.append(P.CircuitPage(layer, u, levels, edges))
    from .site import write_site

    write_site(data, site, command=command)
    return report


def _neuron_page(site, report, layers, li, u, r, circuit_task, dataset_task, thumb) -> P.NeuronPage:
    layer = layers[li]
    c = report.results[circuit_task.key].value
    div = report.results.get(r["diversity"].key) if r["diversity"] is not None else None
    page = P.NeuronPage(layer, u, main=thumb(layer, u),
                        negative=_publish(site, report, r["negative"], "image.png"),
                        diversity=[i for i in (_publish(site, report, r["diversity"], f)
                                               for f in (div.value.files if div else [])) if i])
    for key, other in (("inputs", layers[li - 1] if li > 0 else None),
                       ("outputs", layers[li + 1] if li + 1 < len(layers) else None)):
        for row in getattr(c, key):
            getattr(page, key).append(P.Connection(other, row.unit, row.weight, thumb(other, row.unit),
                                                   _publish(site, report, circuit_task, row.heatmap)))
    page.classes = list(c.classes)
    if dataset_task is not None:
        crops = report.results[dataset_task.key].value.crops.get(str(u), {})
        for sign, target in (("pos", page.positive_examples), ("neg", page.negative_examples)):
            for row in crops.get(sign, []):
                ex = _example(site, report, dataset_task, row)
                if ex:
                    target.append(ex)
    return page


# ------------------------------------------------------------------------------ page-data helpers

def _layer_summaries(info, graph) -> list[P.LayerSummary]:
    """The index table: the graph's meaningful layers (and built layers it does not show), with
    measured receptive fields; every listed layer when the graph is empty."""
    by_name = {i.name: i for i in info}
    rows = [n for n in graph.nodes if n.kind in ("layer", "extra")] if graph and graph.nodes else []
    if not rows:
        return [P.LayerSummary(i.name, i.type, i.shape, i.channels, i.default) for i in info]
    return [P.LayerSummary(n.name, n.type, tuple(n.shape), n.channels,
                           bool(by_name[n.name].default) if n.name in by_name else False,
                           n.receptive_field, n.clipped, n.whole) for n in rows]


def _unit_cards(report, layer, units, thumb, circuits, dataset_task) -> list[P.UnitCard]:
    """A layer page's cards: thumbnail, classes (unit_circuits), mean activation and
    selectivity (dataset pass) where built; descriptions are for the describe task to set."""
    stats = {}
    if dataset_task is not None:
        res = report.results[dataset_task.key].value
        for i, u in enumerate(res.units):
            stats[int(u)] = (res.mean[i] if i < len(res.mean) else None,
                             res.selectivity[i] if i < len(res.selectivity) else None)
    cards = []
    for u in units:
        c = report.results[circuits[(layer, u)].key].value if (layer, u) in circuits else None
        mean, sel = stats.get(int(u), (None, None))
        cards.append(P.UnitCard(u, thumb(layer, u), mean_activation=mean, selectivity=sel,
                                top_classes=[cs.label for cs in c.classes] if c else []))
    return cards


def _example(site, report, task, row) -> Optional[P.Example]:
    """A dataset example with its activation overlay, whole image and receptive-field box."""
    img = _publish(site, report, task, row.file)
    if img is None:
        return None
    overlay = _publish(site, report, task, row.overlay) if row.overlay else None
    full = _publish(site, report, task, row.full) if row.full else None
    return P.Example(img, row.value, row.image, overlay=overlay, full=full,
                     box=tuple(row.box) if row.box and full else None)


def _plan_spatial(plan: _Plan, info, cfg: GalleryConfig) -> dict:
    """{(layer, unit, y, x): render task} for the centre neuron of every unit of a spatial layer."""
    shapes = {i.name: i.shape for i in info}
    out = {}
    for layer in cfg.layers:
        shape = shapes.get(layer, ())
        if len(shape) != 3 or shape[1] * shape[2] <= 1:
            continue
        y, x = shape[1] // 2, shape[2] // 2
        for u in cfg.units[layer]:
            out[(layer, int(u), y, x)] = plan.render(layer, f"{layer}:{int(u)}@{y},{x}", "neuron")
    return out


def _spatial_pages(site, report, spatial: dict, graph) -> list[P.SpatialNeuronPage]:
    pages = []
    for (layer, u, y, x), task in spatial.items():
        node = graph.node(layer) if graph else None
        pages.append(P.SpatialNeuronPage(layer, u, y, x, main=_publish(site, report, task, "image.png"),
                                         receptive_field=node.receptive_field if node else None))
    return pages
