"""Feature-visualization task kinds shared by galleries, atlases and explain pages.

Batched: K units, one forward.

`render_unit` tasks of the same model, layer, recipe and seed share one `optvis.render` call:
image i gets objective i (`channel(...).on(i)`-style batch selection), so a batch of 16 units
costs one batched forward/backward per step instead of 16. Every task still has its own key
and files, so reuse and resume stay per unit. Diversity sets are one task per unit (the
diversity penalty couples the images of one set).
"""

from __future__ import annotations

from typing import Any

from ..images import save_png
from .core import Task, make_task, register_task

#: The default recipe of unit renders (a task's key includes it, so changing it re-renders).
#: `model_px` is the size the model sees (0: its input size). Feeding the 128 px image as is,
#: like Lucid does, costs a third of upsampling it to 224 px and suits thumbnails.
DEFAULT_RECIPE = {"steps": 128, "size": 128, "model_px": 128, "lr": 0.05, "transforms": "standard",
                  "fft": True, "decorrelate": True, "diversity_weight": 0.5}

OBJECTIVES = ("channel", "negative", "neuron", "deepdream", "direction")


def recipe_with_defaults(recipe: dict | None) -> dict:
    """The default recipe overlaid with the given keys."""
    return {**DEFAULT_RECIPE, **(recipe or {})}


def unit_render_task(model_fp: str, layer: str, unit: int, objective: str = "channel", *, seed: int = 0,
                     recipe: dict | None = None) -> Task:
    """The `render_unit` task of one unit: galleries, atlases and explain pages build it the same
    way, so they share each other's finished renders."""
    return make_task("render_unit", model=model_fp, layer=layer, unit=int(unit), objective=objective,
                     seed=int(seed), recipe=recipe_with_defaults(recipe))


def unit_objective(kind: str, layer: str, unit: int, index: int, vector=None):
    """The optvis objective for image `index` of a batch."""
    from ..optvis import objectives as obj

    if kind == "channel":
        return obj.channel(layer, unit, batch=index)
    if kind == "negative":
        return -obj.channel(layer, unit, batch=index)
    if kind == "neuron":
        return obj.neuron(layer, unit, batch=index)
    if kind == "deepdream":
        return obj.layer(layer, batch=index)
    if kind == "direction":
        return obj.direction(layer, vector, batch=index, cossim_power=1.0)
    raise ValueError(f"unknown render objective {kind!r} (expected one of {', '.join(OBJECTIVES)})")


def _model_px(model, recipe: dict) -> int:
    return int(recipe.get("model_px") or model.input_size)


def _render(model, objectives, recipe: dict, seed: int, batch: int):
    from ..optvis import render
    from ..optvis.transforms import get_transforms

    size = int(recipe["size"])
    transforms = get_transforms(recipe["transforms"], _model_px(model, recipe), size)
    return render(model, objectives, batch=batch, steps=int(recipe["steps"]), size=size,
                  lr=float(recipe["lr"]), transforms=transforms, fft=bool(recipe["fft"]),
                  decorrelate=bool(recipe["decorrelate"]), seed=int(seed), progress=False)


def _measure(model, objectives, images, recipe: dict) -> list[float]:
    """Each image's own objective, measured plainly (no transforms, at the size the model saw)."""
    from ..optvis import evaluate

    total = objectives[0]
    for o in objectives[1:]:  # objective i is zero off image i, so one forward measures all
        total = total + o
    return [float(v) for v in evaluate(model, total, images, size=_model_px(model, recipe))]


@register_task("render_unit", batch=16, batch_by=("model", "layer", "recipe", "seed"))
def render_units(tasks, ctxs) -> list[dict[str, Any]]:
    """Render a batch of units of one layer; params: layer, unit, objective, seed, recipe
    (and `vector` for objective='direction'). Writes image.png; meta: value, objective."""
    model = ctxs[0].model
    recipe = recipe_with_defaults(tasks[0]["recipe"])
    objectives = [unit_objective(t["objective"], t["layer"], int(t["unit"]), i, t.get("vector"))
                  for i, t in enumerate(tasks)]
    result = _render(model, objectives, recipe, tasks[0]["seed"], len(tasks))
    values = _measure(model, objectives, result.images, recipe)
    for ctx, img in zip(ctxs, result.images):
        save_png(img[:3], ctx.path("image.png"))
    return [{"value": v, "objective": o.description} for v, o in zip(values, objectives)]


def grouped(objective_for_group, groups: list[range], layer: str, description: str):
    """An objective applying `objective_for_group(g)` to each group's images alone (batch
    penalties such as diversity then couple only the images of one group)."""
    import torch

    from ..optvis.objectives import Context, Objective

    def fn(ctx):
        parts = []
        for g, rows in enumerate(groups):
            sl = slice(rows.start, rows.stop)
            sub = Context(ctx.images[sl], {k: v[sl] for k, v in ctx.acts.items()},
                          None if ctx.logits is None else ctx.logits[sl])
            parts.append(objective_for_group(g)(sub))
        return torch.cat(parts)

    return Objective(fn, description, [layer])


@register_task("render_diversity", batch=4, batch_by=("model", "layer", "recipe", "seed", "count"))
def render_diversity(tasks, ctxs) -> list[dict[str, Any]]:
    """Diversity sets: per unit, `count` images pushed apart in style (Gram matrices) while each
    maximizes the channel. Several units' sets share one batched render; the penalty only
    couples images of the same set. Writes diversity_0.png ...; meta: values."""
    import torch

    from ..optvis import ImageParam, evaluate
    from ..optvis import objectives as obj

    model = ctxs[0].model
    recipe = recipe_with_defaults(tasks[0]["recipe"])
    n, layer, seed = int(tasks[0]["count"]), tasks[0]["layer"], int(tasks[0]["seed"])
    units = [int(t["unit"]) for t in tasks]
    groups = [range(g * n, (g + 1) * n) for g in range(len(tasks))]
    px = _model_px(model, recipe)
    # the penalty is scaled by the objective's size on the start images (as `vizsuite render`
    # does), so one relative weight suits units of very different activation ranges
    start = ImageParam(int(recipe["size"]), n * len(tasks), generator=torch.Generator().manual_seed(seed))
    reward = grouped(lambda g: obj.channel(layer, units[g]), groups, layer,
                     f"channel({layer!r}, {units}) per set")
    scales = evaluate(model, reward, start().detach(), size=px).abs().view(len(tasks), n).mean(1).clamp_min(1.0)
    weight = float(recipe["diversity_weight"])
    objective = grouped(lambda g: obj.channel(layer, units[g]) - weight * float(scales[g]) * obj.diversity(layer),
                        groups, layer, f"channel - {weight:g} * scale * diversity({layer!r}) per set of {n}")
    result = _render(model, objective, recipe, seed, n * len(tasks))
    values = evaluate(model, reward, result.images, size=px).view(len(tasks), n)
    metas = []
    for g, ctx in enumerate(ctxs):
        files = []
        for i in range(n):
            name = f"diversity_{i}.png"
            save_png(result.images[g * n + i][:3], ctx.path(name))
            files.append(name)
        metas.append({"files": files, "values": values[g].tolist(),
                      "objective": f"channel({layer!r}, {units[g]}) - {weight:g} * scale * diversity({layer!r})"})
    return metas
