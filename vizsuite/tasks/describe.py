"""The `describe_units` task kind: unit descriptions, batched by layer (docs/describe.md).

This is where two engines meet (engines never import each other): the causal evidence comes
from `interventions.ablation_effects` (zero-ablating each unit on the images, reading each
image's top-1 logit), the rest from `describe`. One batch = one layer: the stimuli, the images
pass and the ablations run once for all its units, and the simulation's shuffled control pairs
units within the batch.

    tasks = describe_tasks(model, units, images="photos/", seed=0)
    report = run_tasks(tasks, out / ".cache/tasks", model=model)
    descriptions = [report.result(t).value for t in tasks]
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from ..describe.records import ClassEffect, UnitDescription
from .core import Task, make_task, register_task

#: bump when the describe recipe changes (part of every task key)
DESCRIBE_VERSION = 1
#: a class counts as supported when ablating the unit removes at least this share of its logit
MIN_FRACTION = 0.005
BATCH_BY = ("model", "layer", "images_dir", "images_signature", "concepts", "random", "k", "views", "seed",
            "causal", "version")


def describe_tasks(model, units: Sequence, *, images=None, concepts: Optional[Mapping[str, str]] = None,
                   random=None, k: int = 8, views: int = 16, seed: int = 0, causal: int = 16) -> list[Task]:
    """One `describe_units` task per unit (units: `Unit`s or their text). causal: how many of the
    images (the first, sorted) the ablations run on (0: no causal evidence)."""
    from pathlib import Path

    from ..hashing import image_list_signature, model_fingerprint
    from ..images import find_images
    from ..units import parse_unit

    def folder(d):
        if d is None:
            return None, None
        return str(Path(d).resolve()), image_list_signature(find_images(d))

    fp = model_fingerprint(model)
    images_dir, sig = folder(images)
    rnd = list(folder(random)) if random is not None else None
    cons = [[name, *folder(d)] for name, d in sorted((concepts or {}).items())]
    return [make_task("describe_units", model=fp, layer=u.layer, unit=u.to_json(), images_dir=images_dir,
                      images_signature=sig, concepts=cons, random=rnd, k=int(k), views=int(views), seed=int(seed),
                      causal=int(causal) if images is not None else 0, version=DESCRIBE_VERSION)
            for u in (parse_unit(x) for x in units)]


def causal_evidence(model, units, paths, top: int = 3, progress: bool = False) -> list[list[ClassEffect]]:
    """Per unit, the classes whose logit loses the largest share when it is zero-ablated (mean over the
    images predicted as that class), from `interventions.ablation_effects`."""
    import numpy as np

    from ..interventions import ablation_effects

    fx = ablation_effects(model, list(units), list(paths), target="top1", mode="zero", progress=progress)
    classes = fx.classes if fx.classes is not None else np.zeros(len(fx.exact), dtype=int)
    out = []
    for j in range(len(units)):
        rows = []
        for c in sorted(set(int(c) for c in classes)):
            sel = classes == c
            effect = float(fx.exact[sel, j].mean())
            base = float(np.abs(fx.baseline[sel]).mean()) or 1.0
            rows.append(ClassEffect(c, model.label(c).split(",")[0].strip(), effect, max(0.0, -effect / base),
                                    int(sel.sum())))
        rows.sort(key=lambda r: (-r.fraction, r.index))
        out.append([r for r in rows if r.effect < 0 and r.fraction >= MIN_FRACTION][:top])
    return out


def _outputs_classes(model) -> bool:
    """Whether the model outputs N x classes logits (causal support reads a class logit)."""
    import torch

    x = torch.full((1, 3, model.input_size, model.input_size), 0.5, device=model.mean.device)
    with torch.no_grad():
        out = model(x)
    return isinstance(out, torch.Tensor) and out.dim() == 2


def describe_layer(model, units, *, images=None, concepts=None, random=None, k: int = 8, views: int = 16,
                   seed: int = 0, causal: int = 16, progress: bool = False) -> list[UnitDescription]:
    """describe.describe_layer with causal evidence from interventions (the first `causal`
    images of the folder; 0: none)."""
    from ..describe.engine import describe_layer as describe
    from ..images import find_images

    effects = None
    if images is not None and causal > 0 and _outputs_classes(model):
        effects = causal_evidence(model, units, find_images(images)[:causal], progress=progress)
    return describe(model, units, images=images, concepts=concepts, random=random, causal=effects, k=k,
                    views=views, seed=seed, progress=progress)


@register_task("describe_units", result=UnitDescription, batch=4096, batch_by=BATCH_BY)
def describe_units_task(tasks, ctxs) -> list[UnitDescription]:
    """A batch of units of one layer: tuning curves, data and causal evidence, descriptions,
    simulation scores."""
    from ..errors import UserError
    from ..hashing import image_list_signature
    from ..images import find_images
    from ..units import Unit

    t0 = tasks[0]
    checks = []
    if t0["images_dir"]:
        checks.append((t0["images_dir"], t0["images_signature"]))
    if t0["random"]:
        checks.append(tuple(t0["random"]))
    checks += [(d, s) for _, d, s in t0["concepts"]]
    for d, sig in checks:
        if image_list_signature(find_images(d)) != sig:
            raise UserError(f"images in {d} changed since the task was planned; run it again")
    units = [Unit.from_json(t["unit"]) for t in tasks]
    return describe_layer(ctxs[0].model, units, images=t0["images_dir"],
                          concepts={name: d for name, d, _ in t0["concepts"]},
                          random=t0["random"][0] if t0["random"] else None, k=t0["k"], views=t0["views"],
                          seed=t0["seed"], causal=t0["causal"])
