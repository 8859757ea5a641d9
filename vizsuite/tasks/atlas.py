"""Atlas task kinds: the layout (activation samples streamed from a folder, laid out in 2-D)
and chunks of cell icons (feature visualizations of cell directions, one batched render)."""

from __future__ import annotations

from .core import Task, register_task
from .results import AtlasLayout, IconChunk

LAYOUT_KIND = "atlas_layout"
ICON_KIND = "atlas_icons"


@register_task(LAYOUT_KIND, result=AtlasLayout)
def atlas_layout(task: Task, ctx) -> AtlasLayout:
    """Collect samples (`analysis.samples.collect`, one streaming pass), lay them out in 2-D;
    writes layout.npz."""
    from pathlib import Path

    import numpy as np

    from ..analysis.layout import reduce_2d
    from ..analysis.samples import collect

    paths = [Path(p) for p in task["paths"]]
    s = collect(ctx.model, task["layer"], paths, samples=task["samples"], seed=task["seed"],
                class_index=task["class_index"], progress=False)
    coords, method = reduce_2d(s.acts, task["reduce"], task["seed"])
    np.savez_compressed(ctx.path("layout.npz"), acts=s.acts, coords=coords, image=s.image, y=s.y, x=s.x,
                        attribution=s.attribution, grid=np.array(s.grid))
    return AtlasLayout(len(s), method, list(s.grid), int(s.acts.shape[1]))


def _transforms(recipe: dict):
    """The recipe's transform preset, ending in a resize to what the model sees."""
    from ..optvis.transforms import PRESETS

    model_px = recipe.get("model_px") or recipe["size"]
    return PRESETS[recipe["transforms"]](model_px, image_size=recipe["size"])


@register_task(ICON_KIND, result=IconChunk)
def render_icons(task: Task, ctx) -> IconChunk:
    """Render the chunk's icons; files icon_000.png ...; meta: the objective value of each."""
    from ..images import save_png
    from ..optvis import direction, render

    recipe = task["recipe"]
    objectives = [direction(task["layer"], v, cossim_power=recipe["cossim_power"]) for v in task["vectors"]]
    result = render(ctx.model, objectives, size=recipe["size"], steps=recipe["steps"], lr=recipe["lr"],
                    transforms=_transforms(recipe), seed=task["seed"], progress=False,
                    relu_grad=task.get("relu_grad"), precision=task.get("precision", "fp32"))
    images = result.rgb()
    for i, img in enumerate(images):
        save_png(img, ctx.path(f"icon_{i:03d}.png"))
    values = result.values[recipe["steps"]].tolist()
    return IconChunk([round(float(v), 5) for v in values], result.seconds_per_step)


