"""descriptions.json, manifest.json and report.html of `vizsuite describe` (torch-free,
jinja2; the report opens from file:// with no network: curves are inline SVG)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Optional, Sequence

from ..fileio import write_json, write_manifest, write_text
from .records import UnitDescription
from .svg import curve_svg


def layer_summary(descriptions: Sequence[UnitDescription]) -> dict:
    """Per layer: units simulated, mean held-out correlation (own description, control)."""
    import math

    acc: dict[str, list] = {}
    for d in descriptions:
        if d.simulation is not None:
            acc.setdefault(d.unit_json["layer"], []).append(d.simulation)
    out = {}
    for layer, sims in acc.items():
        ctrl = [s.control for s in sims if s.control is not None and not math.isnan(s.control)]
        out[layer] = {"units": len(sims), "correlation": sum(s.correlation for s in sims) / len(sims),
                      "control": sum(ctrl) / len(ctrl) if ctrl else None}
    return out


def _number(sim) -> str:
    import math

    c = None if sim is None else sim.control
    return "-" if c is None or not math.isfinite(c) else f"{c:.2f}"


def write_outputs(out_dir: str | os.PathLike, descriptions: Sequence[UnitDescription], *, model: str,
                  seed: int, stimuli: int, images: Optional[str] = None, seconds: float = 0.0,
                  command: Optional[list[str]] = None, extra: Optional[dict] = None) -> Path:
    """Write the three files (each atomically); the manifest last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = layer_summary(descriptions)
    items = [{"file": "descriptions.json", "model": model, "layer": d.unit_json["layer"], "seed": seed,
              **d.item()} for d in descriptions]
    write_json(out / "descriptions.json", {"model": model, "seed": seed, "stimuli": stimuli, "images": images,
                                           "layers": layers, "items": items})
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("vizsuite.describe", "templates"), autoescape=select_autoescape(["html"]))
    rows = []
    for d in descriptions:
        rows.append({"unit": d.unit, "description": d.description, "confidence": d.confidence,
                     "reasons": d.reasons, "simulation": d.simulation, "control": _number(d.simulation),
                     "tuning": d.evidence.tuning,
                     "svgs": [curve_svg(t) for t in d.evidence.tuning], "top_classes": d.evidence.top_classes,
                     "top_k": d.evidence.top_k, "label_entropy": d.evidence.label_entropy,
                     "concepts": d.evidence.concepts, "causal": d.evidence.causal})
    html = env.get_template("describe.html").render(model=model, units=rows, layers=layers, stimuli=stimuli,
                                                    images=images, seed=seed, created=created)
    write_text(out / "report.html", html)
    write_manifest(out, items, command=command, model=model, seed=seed, stimuli=stimuli, images=images,
                   layers=layers, seconds=seconds, report="report.html", **(extra or {}))
    return out
