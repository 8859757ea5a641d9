"""The `unit_effects` task kind: a gallery unit's causal evidence (docs/interventions.md).

What the unit does: the classes whose probability drops (and rises) most when it is ablated,
over the gallery's image folder. What it uses: the previous gallery layer's channels whose
ablation changes it most over its own top dataset examples, each exact, beside its expanded
weight, and whether the weight view agrees with the measurement at all.
"""

from __future__ import annotations

import math
from pathlib import Path

from .core import Task, make_task, register_task
from .examples import planned_images
from .results import AblationChunk, ClassScore, InputEffect, UnitEffects

#: below this Spearman correlation with the measured effects, expanded weights are not shown
WEIGHTS_AGREEMENT_MIN = 0.3
#: unmeasured expanded weights above this magnitude are not shown: activations here are O(1-10),
#: so a linear gain of 1e3 between two layers is an artefact of linearizing the blocks between
WEIGHTS_SCALE_MAX = 1e3


@register_task("unit_effects", result=UnitEffects, batch=64,
               batch_by=("model", "layer", "basis", "prev", "fan", "top_classes", "images_dir", "images_signature",
                         "mode"))
def unit_effects(tasks, ctxs) -> list[UnitEffects]:
    """Class effects of a batch of units of one layer (one engine call), then each unit's
    measured input edges over its top examples (inputs: `examples`, optional `circuits`)."""
    import numpy as np

    from ..analysis.examples import DatasetExamples
    from ..interventions import ablation_effects, class_effects, reference_stats, spearman
    from ..units import Unit

    model, t0 = ctxs[0].model, tasks[0]
    layer, prev, mode = t0["layer"], t0.get("prev"), t0["mode"]
    fan, top = int(t0["fan"]), int(t0["top_classes"])
    paths = planned_images(t0)
    # a channel index, or a unit record (a dictionary feature: docs/units.md)
    units = [Unit.from_json(t["unit"]) if isinstance(t["unit"], dict) else Unit(layer, int(t["unit"])) for t in tasks]
    ce = class_effects(model, units, paths, mode=mode)
    out = []
    for pos, unit in enumerate(units):
        res = UnitEffects(mode, len(ce.images))
        res.drops = [ClassScore(c, model.label(c), d) for c, d in ce.top(pos, top, "drop")]
        res.rises = [ClassScore(c, model.label(c), d) for c, d in ce.top(pos, top, "rise")]
        out.append(res)
    if not prev:
        return out
    stats = reference_stats(model, paths, prev) if mode == "mean" else None
    for task, ctx, unit, res in zip(tasks, ctxs, units, out):
        ex = DatasetExamples.load(ctx.input("examples").path("examples.npz"))
        images = [str(Path(r["image"])) for r in ex.examples(unit.index, "pos")]
        if not images:
            continue
        fx = ablation_effects(model, prev, images, target=unit, mode=mode, mean=stats)
        effect = fx.effect
        res.examples = len(images)
        weights = None
        if "circuits" in task.inputs:
            w = ctx.input("circuits").value.input_weights
            weights = np.asarray(w, dtype=np.float64) if len(w) == effect.size else None
        order = np.argsort(-np.abs(effect), kind="mergesort")[:fan]
        res.inputs = [InputEffect(int(c), float(effect[c]), None if weights is None else float(weights[c]))
                      for c in order if effect[c] != 0]
        if weights is not None:
            rho = spearman(weights, -effect)  # weights are signed like contributions (intact - ablated)
            res.weights_agreement = None if math.isnan(rho) else rho
            res.weights_max = float(np.abs(weights).max())
            res.weights_note = _weights_note(prev, layer, res.weights_agreement, res.weights_max, effect.size)
    return out


def _weights_note(prev: str, layer: str, rho, wmax: float, n: int) -> str:
    """Why expanded weights are not a meaningful view of this unit's inputs ('' when they are)."""
    if rho is None or rho >= WEIGHTS_AGREEMENT_MIN:  # None: nothing measured to disagree with
        return ""
    return (f"Expanded weights from {prev} are not shown: treating the nonlinearities between {prev} and "
            f"{layer} as identity gives weights up to {wmax:.3g}, and their ranking has Spearman {rho:.2f} with "
            f"the measured ablation effects over {n} input channels (shown only at >= {WEIGHTS_AGREEMENT_MIN}).")


def outputs_note(layer: str, nxt: str, weights) -> str:
    """Why the expanded weights out to `nxt` (not measured) are not shown ('' when they are)."""
    wmax = max((abs(w) for w in weights), default=0.0)
    if wmax <= WEIGHTS_SCALE_MAX:
        return ""
    return (f"Expanded weights to {nxt} are not shown: treating the nonlinearities between {layer} and {nxt} "
            f"as identity gives weights up to {wmax:.3g}, far beyond any real gain between these layers.")


# ---------------------------------------------------------------- ablation sweeps as tasks

#: units per `ablation_chunk` task (a sweep over a layer's channels splits into such tasks)
UNITS_PER_TASK = 32


def ablation_tasks(model, units, images_dir: str, target, *, mode: str, reference=None, batch_size: int = 8,
                   chunk=None, seed: int = 0, units_per_task: int = UNITS_PER_TASK) -> list[Task]:
    """The `ablation_chunk` tasks of one sweep (units of one layer, any basis; target: a
    interventions Target): results are the same whichever executor runs them, and a rerun reuses
    finished chunks."""
    from ..hashing import image_list_signature, model_fingerprint
    from ..images import find_images

    images_dir = str(Path(images_dir).resolve())
    common = dict(model=model_fingerprint(model), images_dir=images_dir,
                  images_signature=image_list_signature(find_images(images_dir)), target=target.as_dict(),
                  mode=mode, batch_size=int(batch_size), chunk=None if chunk is None else int(chunk), seed=int(seed))
    if reference is not None:
        ref = str(Path(reference).resolve())
        common.update(reference=ref, reference_signature=image_list_signature(find_images(ref)))
    units = list(units)
    return [make_task("ablation_chunk", units=[u.to_json() for u in units[i:i + units_per_task]], **common)
            for i in range(0, len(units), max(1, int(units_per_task)))]


def target_from_json(data: dict, model=None):
    """The interventions Target that `Target.as_dict()` describes."""
    from ..interventions import Target, parse_target
    from ..units import Unit

    if data["kind"] == "unit":
        return Target("unit", unit=Unit.from_json(data))
    prob = data.get("quantity") == "probability"
    return parse_target("top1" if data["kind"] == "top1" else str(data["index"]), model, None, prob)


@register_task("ablation_chunk", result=AblationChunk)
def ablation_chunk(task, ctx) -> AblationChunk:
    """Exact ablation effects of a chunk of units over an image folder (`interventions.ablation_effects`)."""
    from ..interventions import ablation_effects
    from ..units import Unit

    paths = planned_images(task, "sweep")
    units = [Unit.from_json(u) for u in task["units"]]
    fx = ablation_effects(ctx.model, units, paths, target_from_json(task["target"], ctx.model), mode=task["mode"],
                          reference=task.get("reference"), batch_size=task["batch_size"], chunk=task.get("chunk"),
                          seed=task["seed"])
    return AblationChunk(fx.exact.tolist(), fx.estimate_per_image.tolist(), fx.baseline.tolist(),
                         None if fx.classes is None else [int(c) for c in fx.classes], list(fx.images), fx.seconds)


def merge_chunks(units, target, mode: str, chunks: list[AblationChunk]):
    """One interventions.AblationEffects from a sweep's chunks (in task order)."""
    import numpy as np

    from ..interventions import AblationEffects

    first = chunks[0]
    exact = np.concatenate([np.asarray(c.exact, dtype=np.float64) for c in chunks], axis=1)
    est = np.concatenate([np.asarray(c.estimate, dtype=np.float64) for c in chunks], axis=1)
    return AblationEffects(list(units), target, mode, exact, est, np.asarray(first.baseline),
                           None if first.classes is None else np.asarray(first.classes), list(first.images),
                           sum(c.seconds for c in chunks))
