"""Automated unit descriptions from measured evidence (docs/describe.md).

Tuning curves on synthetic stimulus families, evidence from data (the model's classes over a
unit's top examples, concept AUROCs; causal class support is composed in `tasks.describe`), a
one-line description with a confidence, and simulation scores. Engines never import each
other: this package reads units, hooks, capture and stream only.

Names load lazily, so `vizsuite.describe.records` (the torch-free result types that task
results and page data use) imports no torch.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "Claim": "records", "ClassEffect": "records", "ClassShare": "records", "ConceptScore": "records",
    "Evidence": "records", "Simulation": "records", "Tuning": "records", "UnitDescription": "records",
    "FAMILIES": "stimuli", "Stimulus": "stimuli", "stimulus_set": "stimuli", "render": "stimuli",
    "stimulus_responses": "tuning", "tuning_curves": "tuning", "unit_responses": "tuning",
    "describe_units": "engine", "describe_layer": "engine",
    "simulate": "simulate", "curve_svg": "svg", "write_outputs": "report", "layer_summary": "report",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
