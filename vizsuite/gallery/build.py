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
  neuron page;
- `unit_effects` (batched by layer; with an image folder): what the unit does (classes whose
  probability drops / rises when it is ablated) and its measured input edges over its examples.
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
from ..tasks.effects import outputs_note
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
    ablation: str = "mean"  # how causal evidence ablates a unit: mean | zero | none (skip it)
    #: dictionary bases by name: a layer `LAYER/NAME` gets feature pages (docs/units.md)
    bases: dict = field(default_factory=dict)
    describe: bool = True  # a one-line description per unit (docs/describe.md), searchable in the index


# ------------------------------------------------------------------------------ plan

class _Plan:
    """The task list of one build (pure data)."""

    def __init__(self, model, cfg: GalleryConfig):
        self.model = model
        self.fp = model_fingerprint(model)
        self.cfg = cfg
        self.recipe = recipe_with_defaults(cfg.recipe, model)
        self.tasks: list[Task] = []
        self.channels: dict[str, int] = {}  # layer -> channels (build_gallery fills it from the listing)
        self.decoders: dict = {}  # feature layer key -> F x C directions (`_decoder`)

    def add(self, kind: str, **params) -> Task:
        t = make_task(kind, model=self.fp, **params)
        self.tasks.append(t)
        return t

    def unit(self, key: str, u: int) -> Unit:
        """The unit behind page (key, u): a channel, or feature u of `LAYER/NAME`."""
        layer, basis = split_key(key, self.cfg.bases)
        return Unit(layer, int(u)) if basis is None else Unit(layer, int(u), basis=basis)

    def render(self, key: str, unit: int, objective: str) -> Task:
        # the same task as atlas/explain thumbnails, so their renders are shared
        layer, basis = split_key(key, self.cfg.bases)
        what = unit if basis is None or unit == -1 else self.unit(key, unit)
        t = unit_render_task(self.model, layer, what, objective, seed=self.cfg.seed, recipe=self.recipe)
        self.tasks.append(t)
        return t

    def diversity(self, key: str, unit: int) -> Task:
        u = self.unit(key, unit)
        return self.add("render_diversity", layer=u.layer, unit=u.to_json(), count=self.cfg.diversity,
                        seed=self.cfg.seed, recipe=self.recipe)


def split_key(key: str, bases) -> tuple[str, Optional[Any]]:
    """A gallery layer key: `LAYER` (channels) or `LAYER/NAME` (features of basis NAME)."""
    layer, sep, name = key.partition("/")
    if not sep:
        return key, None
    if name not in bases:
        raise UserError(f"layer {key}: unknown basis {name!r}; pass --basis {name}=DIR")
    return layer, bases[name]


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
    for key in cfg.layers:
        layer, basis = split_key(key, cfg.bases)
        for u in cfg.units.get(key, []):
            check_unit(Unit(layer, int(u)) if basis is None else Unit(layer, int(u), basis=basis), info)
    for layer, unit in cfg.circuits:
        check_unit(Unit(layer, int(unit)), info)
        if len(cfg.circuit_layers.get(layer, [])) < 1:
            raise UserError(f"no earlier layer to draw a circuit into {layer}:{unit}; pick a later layer")
    if cfg.images:
        find_images(cfg.images)
    if cfg.diversity < 0 or cfg.k < 1 or cfg.fan < 1:
        raise UserError("--diversity must be >= 0, -k and --fan >= 1")
    if cfg.ablation not in ("mean", "zero", "none"):
        raise UserError(f"ablation must be mean, zero or none, not {cfg.ablation!r}")
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
    plan.channels = {i.name: i.channels for i in info}
    keys = list(cfg.layers)
    layers = [key for key in keys if "/" not in key]  # channel layers: circuits run between these
    features = [key for key in keys if "/" in key]
    images_dir = str(Path(cfg.images).resolve()) if cfg.images else None
    dataset = {key: plan.add("dataset_examples", **{k: v for k, v in dataset_task_params(
        model, split_key(key, cfg.bases)[0], cfg.images, k=cfg.k,
        units=[plan.unit(key, u) for u in cfg.units[key]], overlays=True).items() if k != "model"})
        for key in keys} if cfg.images else {}
    dream = {key: plan.render(split_key(key, cfg.bases)[0], -1, "deepdream") for key in keys}
    graph_task = plan.add("model_graph", seed=cfg.seed, extra=layers)
    spatial = _plan_spatial(plan, info, cfg) if cfg.spatial else {}
    renders, circuits, effects = {}, {}, {}
    for li, layer in enumerate(layers):
        for u in cfg.units[layer]:
            renders[(layer, u)] = {"main": plan.render(layer, u, "channel"),
                                   "negative": plan.render(layer, u, "negative"),
                                   "diversity": plan.diversity(layer, u) if cfg.diversity else None}
            circuits[(layer, u)] = plan.add("unit_circuits", layer=layer, unit=int(u), fan=cfg.fan,
                                            prev=layers[li - 1] if li > 0 else None,
                                            next=layers[li + 1] if li + 1 < len(layers) else None,
                                            top_classes=cfg.top_classes, images_dir=images_dir,
                                            input_weights=True)
            if images_dir and cfg.ablation != "none":
                prev = layers[li - 1] if li > 0 else None
                effects[(layer, u)] = make_task(
                    "unit_effects", inputs={"examples": dataset[layer], "circuits": circuits[(layer, u)]},
                    model=plan.fp, layer=layer, unit=int(u), prev=prev, fan=cfg.fan, top_classes=cfg.top_classes,
                    images_dir=images_dir, images_signature=dataset[layer].params["images_signature"],
                    mode=cfg.ablation)
                plan.tasks.append(effects[(layer, u)])
    feature_tasks = _plan_features(plan, features, dataset, renders, effects, images_dir)
    described = _plan_descriptions(plan, keys)
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
    _feature_pages(site, report, plan, data, features, feature_tasks, renders, effects, dataset, dream, thumb)
    for li, layer in enumerate(layers):
        for u in cfg.units[layer]:
            page = _neuron_page(site, report, layers, li, u, renders[(layer, u)], circuits[(layer, u)],
                                dataset.get(layer), thumb)
            fx = report.results[effects[(layer, u)].key].value if (layer, u) in effects else None
            if fx is not None:
                page.effects = _effects(fx, layers[li - 1] if li > 0 else None, thumb)
                if fx.weights_note:  # the weight view is not meaningful here: say so, don't show it
                    page.inputs = []
            if page.outputs:
                page.outputs_note = outputs_note(layer, layers[li + 1], [r.weight for r in page.outputs])
                if page.outputs_note:
                    page.outputs = []
            page.features = _features_using(plan, features, layer, u, thumb)
            if li + 1 < len(layers):  # measured outputs: this unit among the next units' measured inputs
                nxt = layers[li + 1]
                for v in cfg.units[nxt]:
                    other = report.results[effects[(nxt, v)].key].value if (nxt, v) in effects else None
                    for r in (other.inputs if other is not None else []):
                        if r.unit == int(u):
                            page.drives.append(P.MeasuredInput(nxt, int(v), r.effect, None, thumb(nxt, int(v))))
            data.neurons.append(page)
            c = report.results[circuits[(layer, u)].key].value
            if li > 0 and (layer, u) not in graphs:  # a one-level circuit page from the same data
                data.circuits.append(_one_level_circuit(layers[li - 1], layer, u, c, page.effects, thumb))
    for (layer, u), task in graphs.items():
        g = report.results[task.key].value
        levels = [[P.CircuitNode(l, x, thumb(l, x)) for l, x in level] for level in g.levels]
        edges = [P.CircuitEdge(tuple(s), tuple(d), w) for s, d, w in g.edges]
        data.circuits.append(P.CircuitPage(layer, u, levels, edges))
    _attach_descriptions(report, data, described)
    from .site import write_site

    write_site(data, site, command=command)
    return report


# ------------------------------------------------------------------------------ descriptions

def _plan_descriptions(plan: _Plan, keys: list[str]) -> dict:
    """{(key, unit): describe_units task} for every page unit (channels and features alike)."""
    if not plan.cfg.describe:
        return {}
    from ..tasks.describe import describe_tasks

    pairs = [(key, int(u)) for key in keys for u in plan.cfg.units[key]]
    tasks = describe_tasks(plan.model, [plan.unit(key, u) for key, u in pairs], images=plan.cfg.images,
                           k=plan.cfg.k, seed=plan.cfg.seed)
    plan.tasks.extend(tasks)
    return dict(zip(pairs, tasks))


def _attach_descriptions(report, data: P.SiteData, described: dict) -> None:
    """Each described unit's line on its card (layer grid, search index) and its evidence on its page."""
    if not described:
        return
    from ..describe.svg import curve_svg

    found = {pair: report.results[t.key].value for pair, t in described.items() if t.key in report.results}
    for page in data.layers:
        for card in page.units:
            d = found.get((page.name, int(card.unit)))
            if d is not None:
                card.description = d.description
                card.concepts = [c.name for c in d.evidence.concepts if c.auroc >= 0.75]
    for page in data.neurons:
        d = found.get((page.layer, int(page.unit)))
        if d is None:
            continue
        sim = d.simulation
        page.description = P.Description(
            d.description, d.confidence, list(d.reasons),
            [P.Curve(t.family, t.parameter, t.units, t.preferred, t.selectivity, curve_svg(t)) for t in d.evidence.tuning],
            None if sim is None else sim.correlation, None if sim is None else sim.control)


# ------------------------------------------------------------------------------ feature pages

#: neurons shown per feature ("made of") and features per neuron ("used by")
MAKEUP = 6


def _plan_features(plan: _Plan, features: list[str], dataset: dict, renders: dict, effects: dict,
                   images_dir: Optional[str]) -> dict:
    """Tasks of `LAYER/NAME` feature pages: renders like neurons', dataset examples (planned with
    the others), ablation effects, and per feature layer the dictionary's evaluation over the
    images (frequencies) and the neurons-vs-features comparison."""
    cfg, out = plan.cfg, {}
    for key in features:
        layer, basis = split_key(key, cfg.bases)
        for u in cfg.units[key]:
            renders[(key, u)] = {"main": plan.render(key, u, "channel"), "negative": plan.render(key, u, "negative"),
                                 "diversity": plan.diversity(key, u) if cfg.diversity else None}
            if images_dir and cfg.ablation != "none":
                effects[(key, u)] = make_task(
                    "unit_effects", inputs={"examples": dataset[key]}, model=plan.fp, layer=layer, basis=basis.name,
                    unit=plan.unit(key, u).to_json(), prev=None, fan=cfg.fan, top_classes=cfg.top_classes,
                    images_dir=images_dir, images_signature=dataset[key].params["images_signature"], mode=cfg.ablation)
                plan.tasks.append(effects[(key, u)])
        if images_dir:
            sig = dataset[key].params["images_signature"]
            out[key] = {"eval": plan.add("dictionary_eval", layer=layer, basis=basis.ref(), images_dir=images_dir,
                                         images_signature=sig),
                        "compare": plan.add("feature_comparison", layer=layer, basis=basis.ref(), k=cfg.k,
                                            images_dir=images_dir, images_signature=sig)}
    return out


def _decoder(plan: _Plan, key: str):
    """Feature layer `key`'s directions (F x C, float64), built once per build (every neuron page
    of the layer reads a column)."""
    import torch

    if key not in plan.decoders:
        layer, basis = split_key(key, plan.cfg.bases)
        channels = plan.channels[layer]
        plan.decoders[key] = torch.stack([basis.direction(f, channels) for f in range(basis.size(channels))]).double()
    return plan.decoders[key]


def _feature_pages(site, report, plan, data, features, feature_tasks, renders, effects, dataset, dream, thumb):
    """Layer pages (features sorted by frequency over the images) and feature pages."""
    cfg = plan.cfg
    for key in features:
        layer, basis = split_key(key, cfg.bases)
        units = list(cfg.units[key])
        ev = report.results[feature_tasks[key]["eval"].key].value if key in feature_tasks else None
        note = f"Features of dictionary {basis.name!r} on {layer}"
        if ev is not None:
            units.sort(key=lambda f: (-ev.frequency[f], f))
            note += (f", sorted by frequency over the gallery's {ev.images} images (R² {ev.r2:.3f}, mean L0 "
                     f"{ev.mean_l0:.1f}, {100 * ev.dead_fraction:.1f} % dead over {ev.vectors} positions)")
        cards = [P.UnitCard(u, thumb(key, u), f"{100 * ev.frequency[u]:.2g} %" if ev is not None else "")
                 for u in units]
        comparison = None
        if key in feature_tasks:
            comparison = _comparison(key, basis, report.results[feature_tasks[key]["compare"].key].value)
        data.layers.append(P.LayerPage(key, cards, deepdream=_publish(site, report, dream[key], "image.png"),
                                       note=note + ".", comparison=comparison))
        channels = plan.channels[layer]
        dec = _decoder(plan, key)
        for u in cfg.units[key]:
            r = renders[(key, u)]
            div = report.results.get(r["diversity"].key) if r["diversity"] is not None else None
            page = P.NeuronPage(key, u, main=thumb(key, u),
                                negative=_publish(site, report, r["negative"], "image.png"),
                                diversity=[i for i in (_publish(site, report, r["diversity"], f)
                                                       for f in (div.value.files if div else [])) if i])
            row = dec[u]
            for c in row.abs().argsort(descending=True)[:MAKEUP].tolist():
                page.made_of.append(P.Connection(layer, c, float(row[c]), thumb(layer, c)))
            _examples(site, report, page, dataset.get(key), u)
            fx = report.results[effects[(key, u)].key].value if (key, u) in effects else None
            if fx is not None:
                page.effects = _effects(fx, None, thumb)
            page.note = f"Feature {u} of dictionary {basis.name!r} ({basis.kind}) on {layer}: a direction in its " \
                        f"{channels} channels, read through the dictionary's encoder."
            data.neurons.append(page)


def _features_using(plan: _Plan, features: list[str], layer: str, channel: int, thumb) -> list[P.Connection]:
    """The gallery's features of `layer` whose decoder writes most into this channel."""
    out = []
    for key in features:
        lay, basis = split_key(key, plan.cfg.bases)
        if lay != layer:
            continue
        column = _decoder(plan, key)[:, channel]
        for f in column.abs().argsort(descending=True)[:MAKEUP].tolist():
            out.append(P.Connection(key, f, float(column[f]), thumb(key, f)))
    return out


def _comparison(key: str, basis, c) -> P.Comparison:
    order = sorted(range(len(c.features_per_neuron)), key=lambda n: (-c.features_per_neuron[n], n))[:12]
    return P.Comparison(c.layer, basis.name, c.k, c.images, c.mean_neuron_entropy_bits, c.mean_feature_entropy_bits,
                        c.live_features, len(c.feature_indices), c.mean_features_per_neuron,
                        [(n, c.features_per_neuron[n], c.neuron_entropy_bits[n]) for n in order])


def _examples(site, report, page, dataset_task, u) -> None:
    if dataset_task is None:
        return
    crops = report.results[dataset_task.key].value.crops.get(str(u), {})
    for sign, target in (("pos", page.positive_examples), ("neg", page.negative_examples)):
        for row in crops.get(sign, []):
            ex = _example(site, report, dataset_task, row)
            if ex:
                target.append(ex)


def _effects(fx, prev, thumb) -> P.Effects:
    return P.Effects(fx.mode, fx.images, list(fx.drops), list(fx.rises),
                     [P.MeasuredInput(prev, r.unit, r.effect, None if fx.weights_note else r.weight,
                                      thumb(prev, r.unit)) for r in fx.inputs],
                     fx.examples, fx.weights_agreement, fx.weights_note)


def _one_level_circuit(prev: str, layer: str, u: int, c, effects: Optional[P.Effects], thumb) -> P.CircuitPage:
    """A unit and its strongest inputs: measured edges when the build measured them (exact
    ablation effects over the unit's top examples), else expanded weights."""
    if effects is not None and effects.inputs:
        rows = [(r.unit, -r.effect) for r in effects.inputs]  # contribution: intact minus ablated
        measure = "ablation"
        note = effects.weights_note or (f"Expanded weights agree with these measurements (Spearman "
                                        f"{effects.weights_agreement:.2f} over all input channels)."
                                        if effects.weights_agreement is not None else "")
    else:
        rows, measure, note = [(r.unit, r.weight) for r in c.inputs], "expanded weight", ""
    levels = [[P.CircuitNode(layer, u, thumb(layer, u))], [P.CircuitNode(prev, x, thumb(prev, x)) for x, _ in rows]]
    edges = [P.CircuitEdge((prev, x), (layer, u), w) for x, w in rows]
    return P.CircuitPage(layer, u, levels, edges, measure, note)


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
    _examples(site, report, page, dataset_task, u)
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
