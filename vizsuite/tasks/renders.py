"""Feature-visualization task kinds shared by galleries, atlases and explain pages.

Batched: K units, one forward.

`render_unit` tasks of the same model, layer, recipe and seed share one `optvis.render` call:
image i gets objective i (`channel(...).on(i)`-style batch selection), so a batch of 16 units
costs one batched forward/backward per step instead of 16. Every task still has its own key
and files, so reuse and resume stay per unit. Diversity sets are one task per unit (the
diversity penalty couples the images of one set).
"""

from __future__ import annotations

from ..images import save_png
from .core import Task, make_task, register_task
from .results import DiversitySet, UnitRender

#: The default recipe of unit renders (a task's key includes it, so changing it re-renders).
#: `model_px` is the size the model sees (0: its input size). Feeding the 128 px image as is,
#: like Lucid does, costs a third of upsampling it to 224 px and suits thumbnails.
#: `precision` "auto" is resolved (optvis.render.model_precision: bf16 where the model's device
#: computes it natively, else fp32) before it enters a key, so a bf16 render is never reused as
#: an fp32 one; galleries and atlases follow the render default this way (docs/scale.md).
DEFAULT_RECIPE = {"steps": 128, "size": 128, "model_px": 128, "lr": 0.05, "transforms": "standard",
                  "fft": True, "decorrelate": True, "diversity_weight": 0.5, "precision": "auto"}

OBJECTIVES = ("channel", "negative", "neuron", "deepdream", "direction")


def recipe_with_defaults(recipe: dict | None, model=None) -> dict:
    """The default recipe overlaid with the given keys; with `model`, the ReLU gradient rule the
    render will use (`relu_grad`, from its card unless given) is made explicit, so it is part of
    every render task's key. `precision` "auto" is resolved for the model's device (the CPU when
    only a fingerprint is known)."""
    from ..optvis.render import default_relu_grad, model_precision, resolve_precision

    out = {**DEFAULT_RECIPE, **(recipe or {})}
    if model is not None and not out.get("relu_grad"):
        out["relu_grad"] = default_relu_grad(model)
    if model is not None:
        out["precision"] = model_precision(model, out["precision"])
    else:
        out["precision"] = resolve_precision(out["precision"])
    return out


def unit_render_task(model, layer: str, unit, objective: str = "channel", *, seed: int = 0,
                     recipe: dict | None = None) -> Task:
    """The `render_unit` task of one unit (model: the model, or its fingerprint) (`units.Unit`, its text, or a channel index; -1 for a
    whole-layer objective): galleries, atlases and explain pages build it the same way, so they
    share each other's finished renders."""
    from ..hashing import model_fingerprint
    from ..units import Unit, parse_unit

    u = None if unit is None or unit == -1 else (Unit(layer, int(unit)) if isinstance(unit, int) else parse_unit(unit))
    # a fingerprint alone (str) cannot say the model's ReLU rule: give it in the recipe then
    fp, net = (model, None) if isinstance(model, str) else (model_fingerprint(model), model)
    return make_task("render_unit", model=fp, layer=layer, unit=None if u is None else u.to_json(),
                     objective=objective, seed=int(seed), recipe=recipe_with_defaults(recipe, net))


def task_unit(task: Task):
    """The `units.Unit` a render task names (None for whole-layer objectives)."""
    from ..units import Unit

    return None if task.get("unit") is None else Unit.from_json(task["unit"])


def unit_objective(kind: str, layer: str, unit, index: int, vector=None):
    """The optvis objective for image `index` of a batch (`unit`: a units.Unit or None)."""
    from ..optvis import objectives as obj

    if kind == "channel":
        return obj.unit(unit, batch=index)
    if kind == "negative":
        return -obj.unit(unit, batch=index)
    if kind == "neuron":
        return obj.unit(unit if unit.y is not None else unit.reduced("center"), batch=index)
    if kind == "deepdream":
        return obj.layer(layer, batch=index)
    if kind == "direction":
        return obj.direction(layer, vector, batch=index, cossim_power=1.0)
    raise ValueError(f"unknown render objective {kind!r} (expected one of {', '.join(OBJECTIVES)})")


def _task_recipe(task: Task) -> dict:
    """A task's recipe as it was keyed; a key made before recipes named their precision was
    rendered in fp32, and still is."""
    return recipe_with_defaults({"precision": "fp32", **task["recipe"]})


def _model_px(model, recipe: dict) -> int:
    return int(recipe.get("model_px") or model.input_size)


def _render(model, objectives, recipe: dict, seed: int, batch: int):
    from ..optvis import render
    from ..optvis.transforms import get_transforms

    size = int(recipe["size"])
    transforms = get_transforms(recipe["transforms"], _model_px(model, recipe), size)
    return render(model, objectives, batch=batch, steps=int(recipe["steps"]), size=size,
                  lr=float(recipe["lr"]), transforms=transforms, fft=bool(recipe["fft"]),
                  decorrelate=bool(recipe["decorrelate"]), seed=int(seed), progress=False,
                  relu_grad=recipe.get("relu_grad"), precision=recipe["precision"])


def _measure(model, objectives, images, recipe: dict) -> list[float]:
    """Each image's own objective, measured plainly (no transforms, at the size the model saw)."""
    from ..optvis import evaluate

    total = objectives[0]
    for o in objectives[1:]:  # objective i is zero off image i, so one forward measures all
        total = total + o
    return [float(v) for v in evaluate(model, total, images, size=_model_px(model, recipe))]


@register_task("render_unit", result=UnitRender, batch=16, batch_by=("model", "layer", "recipe", "seed"))
def render_units(tasks, ctxs) -> list[UnitRender]:
    """Render a batch of units of one layer; params: layer, unit, objective, seed, recipe
    (and `vector` for objective='direction'). Writes image.png; meta: value, objective."""
    model = ctxs[0].model
    recipe = _task_recipe(tasks[0])
    objectives = [unit_objective(t["objective"], t["layer"], task_unit(t), i, t.get("vector"))
                  for i, t in enumerate(tasks)]
    result = _render(model, objectives, recipe, tasks[0]["seed"], len(tasks))
    values = _measure(model, objectives, result.images, recipe)
    for ctx, img in zip(ctxs, result.images):
        save_png(img[:3], ctx.path("image.png"))
    return [UnitRender(v, o.description) for v, o in zip(values, objectives)]


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


@register_task("render_diversity", result=DiversitySet, batch=4,
               batch_by=("model", "layer", "recipe", "seed", "count"))
def render_diversity(tasks, ctxs) -> list[DiversitySet]:
    """Diversity sets: per unit, `count` images pushed apart in style (Gram matrices) while each
    maximizes the channel. Several units' sets share one batched render; the penalty only
    couples images of the same set. Writes diversity_0.png ...; meta: values."""
    import torch

    from ..optvis import ImageParam, evaluate
    from ..optvis import objectives as obj

    model = ctxs[0].model
    recipe = _task_recipe(tasks[0])
    n, layer, seed = int(tasks[0]["count"]), tasks[0]["layer"], int(tasks[0]["seed"])
    units = [task_unit(t) for t in tasks]
    groups = [range(g * n, (g + 1) * n) for g in range(len(tasks))]
    px = _model_px(model, recipe)
    # the penalty is scaled by the objective's size on the start images (as `vizsuite render`
    # does), so one relative weight suits units of very different activation ranges
    start = ImageParam(int(recipe["size"]), n * len(tasks), generator=torch.Generator().manual_seed(seed))
    reward = grouped(lambda g: obj.unit(units[g]), groups, layer,
                     f"channel({layer!r}, {[u.index for u in units]}) per set")
    scales = evaluate(model, reward, start().detach(), size=px).abs().view(len(tasks), n).mean(1).clamp_min(1.0)
    weight = float(recipe["diversity_weight"])
    objective = grouped(lambda g: obj.unit(units[g]) - weight * float(scales[g]) * obj.diversity(layer),
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
        metas.append(DiversitySet(files, values[g].tolist(),
                                  f"channel({layer!r}, {units[g].index}) - {weight:g} * scale * diversity({layer!r})"))
    return metas
