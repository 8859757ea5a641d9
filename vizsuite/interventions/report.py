"""Static HTML pages of `vizsuite ablate` and `vizsuite patch` (torch-free, jinja2, open from
file:// with no network: bars are plain HTML/CSS, images are relative files)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..fileio import write_text


def _env() -> Environment:
    return Environment(loader=PackageLoader("vizsuite.interventions", "templates"),
                       autoescape=select_autoescape(["html"]))


def bar_rows(rows: list[dict], key: str = "effect", also: str = "estimate") -> list[dict]:
    """Rows with `width` / `also_width` (percent of the largest |value|) and a sign, for CSS bars."""
    vals = [abs(r[k]) for r in rows for k in (key, also) if k in r and r[k] is not None and math.isfinite(r[k])]
    top = max(vals) if vals else 1.0
    top = top or 1.0
    out = []
    for r in rows:
        v, e = r.get(key), r.get(also)
        out.append({**r, "width": 0.0 if v is None or not math.isfinite(v) else 50.0 * abs(v) / top,
                    "negative": v is not None and v < 0,
                    "also_width": 0.0 if e is None or not math.isfinite(e) else 50.0 * abs(e) / top,
                    "also_negative": e is not None and e < 0})
    return out


def render_ablation(out_dir: str | os.PathLike, *, model: str, layer: str, target: str, mode: str, rows: list[dict],
                    images: int, rank_correlation: float, created: str, seconds: float) -> Path:
    """out_dir/report.html: units ranked by |effect|, a bar per unit (exact effect and estimate)."""
    html = _env().get_template("ablate.html").render(
        model=model, layer=layer, target=target, mode=mode, rows=bar_rows(rows), images=images,
        rank_correlation=rank_correlation, created=created, seconds=seconds)
    return write_text(Path(out_dir) / "report.html", html)


def render_patch(out_dir: str | os.PathLike, *, model: str, target: str, source: str, dest: str, units: list[str],
                 before: float, after: float, source_value: float, restored: float, heatmaps: list[dict],
                 rows: list[dict], created: str) -> Path:
    """out_dir/report.html: before / after / restored, per-unit restored fractions, heatmaps."""
    html = _env().get_template("patch.html").render(
        model=model, target=target, source=source, dest=dest, units=units, before=before, after=after,
        source_value=source_value, restored=restored, heatmaps=heatmaps,
        rows=bar_rows(rows, key="restored", also="none"), created=created)
    return write_text(Path(out_dir) / "report.html", html)
