"""Circuit task kinds: a unit's strongest inputs and outputs (expanded weights, with heatmaps)
and the classes it supports; circuit graphs over several layers."""

from __future__ import annotations

from .core import register_task
from .results import CircuitGraph, ClassScore, Connection, UnitCircuits


@register_task("unit_circuits", result=UnitCircuits, batch=64,
               batch_by=("model", "layer", "prev", "next", "fan", "top_classes", "images_dir"))
def unit_circuits(tasks, ctxs) -> list[UnitCircuits]:
    """Strongest inputs (prev layer) with heatmaps, strongest outputs (next layer), classes —
    for a batch of units of one layer (expanded weights of all of them in one pass)."""
    from ..analysis import circuits as C
    from ..images import save_png

    model, t0 = ctxs[0].model, tasks[0]
    layer, fan, units = t0["layer"], int(t0["fan"]), [int(t["unit"]) for t in tasks]
    metas = [UnitCircuits() for _ in tasks]
    for key, other, weights in (
            ("inputs", t0.get("prev"), lambda: C.expanded_weights_into_many(model, t0["prev"], layer, units)),
            ("outputs", t0.get("next"), lambda: C.expanded_weights_out_of_many(model, layer, units, t0["next"]))):
        if not other:
            continue
        for meta, ctx, ew in zip(metas, ctxs, weights()):
            if key == "inputs":
                meta.input_weights = [float(w) for w in ew.signed]
            scale = float(ew.kernels.abs().max()) or 1.0  # one scale per unit: heatmaps comparable
            for ch, w in ew.top(fan):
                name = f"{key}_{ch}.png"
                save_png(C.weight_heatmap(ew.kernels[ch], 48, scale) / 255.0, ctx.path(name))
                getattr(meta, key).append(Connection(ch, w, name))
    if t0["top_classes"]:
        images = None
        if t0.get("images_dir"):
            # the true network's derivative at real photos: a fully linearized deep net
            # over-amplifies (scores ~1e9) and ranks classes poorly
            from ..images import find_images, load_batch

            paths = find_images(t0["images_dir"])[:8]
            images = load_batch(paths, model.input_size, model.spec.crop_pct)
        support = C.class_support(model, layer, units, images=images, top=int(t0["top_classes"]))
        for meta, u in zip(metas, units):
            meta.classes = [ClassScore(c, model.label(c), s) for c, s in support[u]]
    return metas


@register_task("circuit_graph", result=CircuitGraph)
def circuit_graph(task, ctx) -> CircuitGraph:
    """A unit and its strongest inputs over the given earlier layers: levels and weighted edges."""
    from ..analysis import circuits as C

    levels, edges = C.circuit(ctx.model, task["layers"], int(task["unit"]), int(task["fan"]))
    return CircuitGraph(levels, edges)
