"""Tuning curves as small inline SVG (a string; torch-free, no plotting library)."""

from __future__ import annotations

from html import escape

from .records import Tuning


def curve_svg(t: Tuning, width: int = 160, height: int = 64) -> str:
    """An inline <svg> of a tuning curve: the curve, the blank-free baseline at its minimum, the
    preferred value marked, axis ends labelled."""
    pad_l, pad_r, pad_t, pad_b = 4, 4, 12, 12
    xs, ys = t.values, t.curve
    if not xs:
        return ""
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    span_x = (x1 - x0) or 1.0
    span_y = (y1 - y0) or 1.0
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def px(v):
        return pad_l + w * (v - x0) / span_x

    def py(v):
        return pad_t + h * (1 - (v - y0) / span_y)

    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    pref = min(max(t.preferred, x0), x1)
    unit = "°" if t.units == "deg" else " px"
    title = escape(f"{t.family}: preferred {t.preferred:.1f}{unit}, selectivity {t.selectivity:.2f}")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{title}" class="tuning">'
            f"<title>{title}</title>"
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>'
            f'<line x1="{px(pref):.1f}" y1="{pad_t}" x2="{px(pref):.1f}" y2="{pad_t + h}" stroke="#e44" '
            f'stroke-dasharray="2,2"/>'
            f'<polyline points="{points}" fill="none" stroke="#246" stroke-width="1.5"/>'
            f'<text x="{pad_l}" y="{height - 2}" font-size="9" fill="#555">{x0:g}{escape(unit)}</text>'
            f'<text x="{width - pad_r}" y="{height - 2}" font-size="9" fill="#555" text-anchor="end">'
            f"{x1:g}{escape(unit)}</text>"
            f'<text x="{pad_l}" y="9" font-size="9" fill="#333">{escape(t.family)} '
            f"{t.selectivity:.2f}</text></svg>")
