"""Write the atlas and building-blocks pages (torch-free: jinja2 + the shared file helpers).

The page data is embedded as JSON in the HTML, not fetched, because browsers refuse fetch()
on file:// pages; our own JS (static/atlas.js) draws the zoomable view from it.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Optional

import jinja2

from .. import __version__
from ..fileio import atomic_path, finite, write_manifest, write_text

STATIC_FILES = ("atlas.js", "atlas.css")


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("vizsuite.atlas", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _gallery_css() -> Optional[object]:
    """The gallery's stylesheet (shared page chrome), if the gallery package ships one."""
    try:
        ref = resources.files("vizsuite.gallery").joinpath("static", "site.css")
        return ref if ref.is_file() else None
    except (ModuleNotFoundError, FileNotFoundError):
        return None


def copy_static(site: Path) -> list[str]:
    """Copy our JS/CSS (and the gallery's CSS) into SITE/static; return stylesheet hrefs."""
    hrefs = []
    gallery = _gallery_css()
    if gallery is not None:
        _copy_resource(gallery, site / "static" / "site.css")
        hrefs.append("static/site.css")
    for name in STATIC_FILES:
        _copy_resource(resources.files("vizsuite.atlas").joinpath("static", name), site / "static" / name)
    hrefs.append("static/atlas.css")
    return hrefs


def _copy_resource(ref, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        with ref.open("rb") as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)


def copy_file(src: Path, dest: Path) -> None:
    """Copy a cached render into the site atomically (the cache may be shared between sites)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def _json_for_script(data) -> str:
    # "</script" would end the <script> element early and "<!--" would put the parser into its
    # script-data-escaped state (the page's own script never runs): no <, > or & in the element;
    # "\u003c" means "<" to JSON.parse. NaN/inf (invalid JSON) become null.
    text = json.dumps(finite(data), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _render(site: Path, template: str, data_id: str, data: dict, **context) -> Path:
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    html = _env().get_template(template).render(stylesheets=copy_static(site), data_id=data_id,
                                                data_json=_json_for_script(data), version=__version__,
                                                created=created, **context)
    return write_text(site / "index.html", html)


def write_atlas_site(site: Path, data: dict, items: list[dict], command: Optional[list[str]] = None) -> Path:
    """index.html + static files + manifest.json for an atlas.

    `data` holds grid, cell_px, cells (id, row, col, count, file, patches, classes, ...) and the
    run's description (model, layer, samples, images, reduce, target); `items` are the manifest items.
    """
    site = Path(site)
    title = f"Activation atlas: {data['model']} {data['layer']}"
    subtitle = f"{data['grid']} x {data['grid']} grid, {len(data['cells'])} cells"
    _render(site, "atlas.html", "atlas-data", data, title=title, subtitle=subtitle, cells=data["cells"],
            grid=data["grid"], samples=data["samples"], images=data["images"], reduce=data["reduce"],
            target=data.get("target") or "")
    extra = {k: data[k] for k in ("model", "layer", "grid", "samples", "images", "reduce", "seed", "target",
                                  "min_count", "icon") if k in data}
    return write_manifest(site, items, command, page="index.html", kind="atlas", **extra)


def write_explain_site(site: Path, data: dict, items: list[dict], command: Optional[list[str]] = None) -> Path:
    """index.html + static files + manifest.json for one image's building blocks."""
    site = Path(site)
    title = f"Building blocks: {data['image_name']}"
    subtitle = f"{data['model']} at {data['layer']}"
    _render(site, "explain.html", "explain-data", data, title=title, subtitle=subtitle,
            predictions=data["predictions"], target=data["target"]["label"], layer=data["layer"],
            image_file=data["image_file"], heat_file=data["heat_file"], units=data["units"])
    extra = {k: data[k] for k in ("model", "layer", "image", "target", "predictions", "grid") if k in data}
    return write_manifest(site, items, command, page="index.html", kind="explain", **extra)
