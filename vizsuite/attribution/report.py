"""The static report.html of `vizsuite attribute`: images x methods (torch-free, works from file://)."""

from __future__ import annotations

import os
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from ..fileio import write_text


def render_report(out_dir: str | os.PathLike, *, model: str, target: str, methods: list[str], rows: list[dict],
                  created: str, legend: str, thumb: int = 160) -> Path:
    """Write out_dir/report.html.

    rows: [{name, input, target, prediction: [{label, probability}], cells: [cell | None per method]}]
    with cell = {method, heatmap, overlay, check: {name, value} | None, options: str}; every path
    relative to out_dir. Names are HTML-escaped by the template (autoescape).
    """
    env = Environment(loader=PackageLoader("vizsuite.attribution", "templates"),
                      autoescape=select_autoescape(["html"]))
    html = env.get_template("report.html").render(model=model, target=target, methods=methods, rows=rows,
                                                  created=created, legend=legend, thumb=thumb)
    return write_text(Path(out_dir) / "report.html", html)
