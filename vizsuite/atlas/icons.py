"""Atlas icons: feature visualizations of cell directions, rendered in batches as cached tasks.

One task renders a chunk of icons in one batched `render` pass (a per-image direction
objective per icon). Its key hashes the model fingerprint, layer, the (rounded) vectors, the
recipe and the seed, so a rerun, or another atlas that shares cells, reuses finished chunks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..tasks import Task, make_task, model_fingerprint, register_task, run_tasks

ICON_KIND = "atlas_icons"


@dataclass(frozen=True)
class IconRecipe:
    """How icons are rendered (everything here is part of the task key)."""

    size: int = 80
    steps: int = 96
    lr: float = 0.05
    transforms: str = "standard"
    cossim_power: float = 1.0
    model_px: int = 0  # the size the model sees; 0: the icon size itself (cheap on CPU, and a
                       # cell is one position's activation, whose receptive field is icon-sized)

    def as_dict(self) -> dict:
        return asdict(self)


def icon_tasks(model, layer: str, vectors: np.ndarray, recipe: IconRecipe, seed: int = 0,
               batch: int = 16) -> list[Task]:
    """One task per chunk of `batch` vectors (in order)."""
    fp = model_fingerprint(model)
    vectors = np.asarray(vectors, dtype=np.float64)
    # unit length and rounded: the key must not depend on float noise, and the renderer uses
    # exactly these numbers, so equal keys mean equal pixels
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    vectors = np.round(vectors / norms, 5)
    return [make_task(ICON_KIND, model=fp, layer=layer, vectors=vectors[i:i + batch].tolist(),
                      recipe=recipe.as_dict(), seed=int(seed))
            for i in range(0, len(vectors), batch)]


def _transforms(recipe: dict):
    """The recipe's transform preset, ending in a resize to what the model sees."""
    from ..optvis.transforms import PRESETS

    model_px = recipe.get("model_px") or recipe["size"]
    return PRESETS[recipe["transforms"]](model_px, image_size=recipe["size"])


@register_task(ICON_KIND)
def render_icons(task: Task, ctx) -> dict:
    """Render the chunk's icons; files icon_000.png ...; meta: the objective value of each."""
    from ..images import save_png
    from ..optvis import direction, render

    recipe = task["recipe"]
    objectives = [direction(task["layer"], v, cossim_power=recipe["cossim_power"]) for v in task["vectors"]]
    result = render(ctx.model, objectives, size=recipe["size"], steps=recipe["steps"], lr=recipe["lr"],
                    transforms=_transforms(recipe), seed=task["seed"], progress=False)
    images = result.rgb()
    for i, img in enumerate(images):
        save_png(img, ctx.path(f"icon_{i:03d}.png"))
    values = result.values[recipe["steps"]].tolist()
    return {"values": [round(float(v), 5) for v in values], "seconds_per_step": result.seconds_per_step}


def render_cell_icons(model, layer: str, vectors: np.ndarray, cache_dir: Path, recipe: IconRecipe,
                      seed: int = 0, batch: int = 16, progress: bool = True,
                      counts: Optional[dict] = None) -> list[tuple[Path, float]]:
    """(icon path in the cache, objective value) for each vector, computing missing chunks;
    `counts` (a dict), when given, gets the tasks computed and reused added to it."""
    tasks = icon_tasks(model, layer, vectors, recipe, seed, batch)
    report = run_tasks(tasks, cache_dir, model=model, progress=progress, desc="icons")
    if counts is not None:
        counts["computed"] = counts.get("computed", 0) + report.computed
        counts["reused"] = counts.get("reused", 0) + report.reused
    out = []
    for t in tasks:
        res = report.result(t)
        for i, value in enumerate(res.meta["values"]):
            out.append((res.path(f"icon_{i:03d}.png"), value))
    return out


# ------------------------------------------------------------------ unit thumbnails (explain)

def render_unit_icons(model, layer: str, units: Sequence[int], cache_dir: Path, recipe: IconRecipe,
                      seed: int = 0, batch: int = 16, progress: bool = True) -> dict[int, Path]:
    """{unit: thumbnail path}: `render_unit` tasks, the very tasks a gallery with the same recipe
    and seed builds, so pointing `cache_dir` at a gallery's cache reuses its renders."""
    from ..tasks.renders import unit_render_task

    fp = model_fingerprint(model)
    overrides = {"size": recipe.size, "steps": recipe.steps, "lr": recipe.lr, "transforms": recipe.transforms,
                 "model_px": recipe.model_px or recipe.size}
    tasks = {int(u): unit_render_task(fp, layer, int(u), "channel", seed=seed, recipe=overrides) for u in units}
    report = run_tasks(list(tasks.values()), cache_dir, model=model, progress=progress, desc="units")
    return {u: report.result(t).path("image.png") for u, t in tasks.items()}
