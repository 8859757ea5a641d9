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

from ..tasks import Task, make_task, model_fingerprint, run_tasks
from ..tasks.atlas import ICON_KIND



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
    """One task per chunk of `batch` vectors (in order); the key includes the ReLU gradient rule
    the render uses (the model card's) and its precision ("auto" resolved for the model's
    device: a bf16 render is never reused as an fp32 one)."""
    from ..optvis.render import default_relu_grad, model_precision

    fp = model_fingerprint(model)
    vectors = np.asarray(vectors, dtype=np.float64)
    # unit length and rounded: the key must not depend on float noise, and the renderer uses
    # exactly these numbers, so equal keys mean equal pixels
    norms = np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    vectors = np.round(vectors / norms, 5)
    return [make_task(ICON_KIND, model=fp, layer=layer, vectors=vectors[i:i + batch].tolist(),
                      recipe=recipe.as_dict(), seed=int(seed), relu_grad=default_relu_grad(model),
                      precision=model_precision(model))
            for i in range(0, len(vectors), batch)]


def render_cell_icons(model, layer: str, vectors: np.ndarray, cache_dir: Path, recipe: IconRecipe,
                      seed: int = 0, batch: int = 16, progress: bool = True,
                      run: Optional[dict] = None, counts: Optional[dict] = None) -> list[tuple[Path, float]]:
    """(icon path in the cache, objective value) for each vector, computing missing chunks
    (`run`: run_tasks execution options; default in this process); `counts` (a dict), when
    given, gets the tasks computed and reused added to it."""
    tasks = icon_tasks(model, layer, vectors, recipe, seed, batch)
    report = run_tasks(tasks, cache_dir, desc="icons", **(run or {"model": model, "progress": progress}))
    if counts is not None:
        counts["computed"] = counts.get("computed", 0) + report.computed
        counts["reused"] = counts.get("reused", 0) + report.reused
    out = []
    for t in tasks:
        res = report.result(t)
        for i, value in enumerate(res.value.values):
            out.append((res.path(f"icon_{i:03d}.png"), value))
    return out


# ------------------------------------------------------------------ unit thumbnails (explain)

def render_unit_icons(model, layer: str, units: Sequence[int], cache_dir: Path, recipe: IconRecipe,
                      seed: int = 0, batch: int = 16, progress: bool = True) -> dict[int, Path]:
    """{unit: thumbnail path}: `render_unit` tasks, the very tasks a gallery with the same recipe
    and seed builds, so pointing `cache_dir` at a gallery's cache reuses its renders."""
    from ..tasks.renders import unit_render_task

    overrides = {"size": recipe.size, "steps": recipe.steps, "lr": recipe.lr, "transforms": recipe.transforms,
                 "model_px": recipe.model_px or recipe.size}
    tasks = {int(u): unit_render_task(model, layer, int(u), "channel", seed=seed, recipe=overrides) for u in units}
    report = run_tasks(list(tasks.values()), cache_dir, model=model, progress=progress, desc="units")
    return {u: report.result(t).path("image.png") for u, t in tasks.items()}
