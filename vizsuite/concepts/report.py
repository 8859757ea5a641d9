"""Static HTML pages of `vizsuite tcav` and `vizsuite probe` (torch-free, jinja2; open from
file:// with no network: bars and error bars are plain HTML/CSS, the accuracy plot is an
inline SVG, images are relative files). docs/concepts.md."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from jinja2 import Environment, PackageLoader, select_autoescape

from ..fileio import write_text

PALETTE = ("#c53030", "#2b6cb0", "#2f855a", "#b7791f", "#6b46c1", "#319795", "#d53f8c", "#4a5568")


def _env() -> Environment:
    return Environment(loader=PackageLoader("vizsuite.concepts", "templates"), autoescape=select_autoescape(["html"]))


def accuracy_svg(layers: Sequence[str], series: dict, width: int = 560, height: int = 300) -> str:
    """An SVG line plot of held-out accuracy (0.5 .. 1 on y) per layer (x), one line per series
    ({label: [accuracy per layer]}), with a legend."""
    left, right, top, bottom = 48, 150, 16, 60
    w, h = width - left - right, height - top - bottom
    n = max(len(layers), 1)

    def x(i):
        return left + (w * (i + 0.5) / n)

    def y(v):
        v = min(max(v, 0.0), 1.0)
        return top + h * (1.0 - v)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e2e2e2"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.2f}</text>')
    parts.append(f'<line x1="{left}" x2="{left + w}" y1="{y(0.5):.1f}" y2="{y(0.5):.1f}" stroke="#999" '
                 f'stroke-dasharray="4 3"/>')
    for i, layer in enumerate(layers):
        parts.append(f'<text x="{x(i):.1f}" y="{top + h + 14}" text-anchor="end" '
                     f'transform="rotate(-30 {x(i):.1f} {top + h + 14})">{_esc(layer)}</text>')
    parts.append(f'<text x="14" y="{top + h / 2:.1f}" transform="rotate(-90 14 {top + h / 2:.1f})" '
                 f'text-anchor="middle">held-out accuracy</text>')
    for k, (label, values) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        pts = [(x(i), y(v)) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
        if len(pts) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for a, b in pts:
            parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>')
        ly = top + 12 + 16 * k
        parts.append(f'<line x1="{left + w + 12}" x2="{left + w + 30}" y1="{ly - 4}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + w + 34}" y="{ly}">{_esc(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _esc(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def score_bars(rows: list[dict]) -> list[dict]:
    """Rows with CSS geometry for a TCAV bar in [0, 1] and its error bar (score +- score_std)."""
    out = []
    for r in rows:
        s, sd = float(r["score"]), float(r["score_std"])
        lo, hi = max(0.0, s - sd), min(1.0, s + sd)
        out.append({**r, "bar": 100.0 * s, "err_left": 100.0 * lo, "err_width": 100.0 * (hi - lo),
                    "null_left": 100.0 * r.get("null_score", 0.5)})
    return out


def render_tcav(out_dir: str | os.PathLike, **page) -> Path:
    """out_dir/report.html of a TCAV run: a bar with error bar per (concept, layer, class), the
    null (random-vs-random) mean as a tick, p-values, ablation effects, rendered directions and
    example images. `page`: model, rows, concepts ({name, examples}), directions, meta."""
    page["rows"] = score_bars(page["rows"])
    return write_text(Path(out_dir) / "report.html", _env().get_template("tcav.html").render(**page))


def render_probe(out_dir: str | os.PathLike, **page) -> Path:
    """out_dir/report.html of a probe run: the accuracy table and plot."""
    return write_text(Path(out_dir) / "report.html", _env().get_template("probe.html").render(**page))
