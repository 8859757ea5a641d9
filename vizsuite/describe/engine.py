"""describe_units: tuning curves + evidence from data -> descriptions, scored by simulation
(docs/describe.md)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..units import Unit, parse_unit
from .records import ClassEffect, Evidence, UnitDescription
from .stimuli import FAMILIES


def describe_layer(model, units: Sequence[Unit], *, images=None, concepts: Optional[Mapping[str, object]] = None,
                   random=None, causal: Optional[Sequence[Sequence[ClassEffect]]] = None, k: int = 8,
                   views: int = 16, seed: int = 0, families: Sequence[str] = tuple(FAMILIES),
                   progress: bool = False, cache_dir=None, batch_size: int = 32) -> list[UnitDescription]:
    """Describe units of one layer (any basis). images: a folder or paths (top classes and, with
    views > 0, simulation on seeded crops of them); concepts: name -> folder, scored against
    `random`; causal: per unit, the classes its ablation changes (from interventions, composed in
    `tasks.describe`). Same inputs and seed -> same descriptions."""
    from .evidence import data_evidence
    from .simulate import FeatureBank, simulate, views as make_views
    from .text import describe, strength_from
    from .tuning import layer_of, stimulus_responses, tuning_curves, unit_responses

    units = [parse_unit(u) for u in units]
    if not units:
        raise UserError("no units to describe")
    layer = layer_of(units)
    if causal is not None and len(causal) != len(units):
        raise UserError(f"causal evidence for {len(causal)} units, {len(units)} units given")
    if images is not None or concepts:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise UserError("data evidence and simulation need scikit-learn: pip install 'vizsuite[describe]'") \
                from None
    stimuli, resp = stimulus_responses(model, units, families, batch_size=batch_size, progress=progress)
    tunings, blank = tuning_curves(stimuli, resp)
    data = data_evidence(model, units, images, k=k, concepts=concepts, random=random, progress=progress,
                         cache_dir=cache_dir)
    out = []
    for j, u in enumerate(units):
        ev = Evidence(tunings[j], float(blank[j]), data.top_classes[j], data.entropy[j], data.k,
                      data.concepts[j], list(causal[j]) if causal is not None else [])
        best = max((t.response for t in ev.tuning), default=ev.blank)
        natural = data.values[:, j] if len(data.values) else None
        line, confidence, claims = describe(ev, strength_from(best, ev.blank, natural))
        out.append(UnitDescription(str(u), u.to_json(), line, confidence, claims, ev))
    if images is not None and views > 0:
        from ..images import find_images

        paths = find_images(images) if not isinstance(images, (list, tuple)) else list(images)
        gen = torch.Generator().manual_seed(int(seed))
        x, source = make_views(paths, model.input_size, views, gen)
        batches = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
        values, logp = unit_responses(model, units, batches, logits=True, batch_size=batch_size)
        bank = FeatureBank(x, logp, data.concept_directions, model.input_size)
        for d, s in zip(out, simulate(out, values, bank, source, gen)):
            d.simulation = s
    return out


def describe_units(model, units: Sequence, **kwargs) -> list[UnitDescription]:
    """Describe units of any layers (one `describe_layer` call per layer, order kept)."""
    bases = kwargs.pop("bases", None)
    parsed = [parse_unit(u, bases) for u in units]
    by_layer: dict[str, list[int]] = {}
    for i, u in enumerate(parsed):
        by_layer.setdefault(u.layer, []).append(i)
    out: list[Optional[UnitDescription]] = [None] * len(parsed)
    causal = kwargs.pop("causal", None)
    for layer, idx in by_layer.items():
        c = None if causal is None else [causal[i] for i in idx]
        for i, d in zip(idx, describe_layer(model, [parsed[i] for i in idx], causal=c, **kwargs)):
            out[i] = d
    return out  # type: ignore[return-value]
