"""Write the static gallery site from page data (torch-free: imports no torch, numpy only for PNGs).

    write_site(SiteData(model=..., layers=[...], neurons=[...], circuits=[...]), "out/site")

Pages: index.html, layers/<layer>.html, neurons/<layer>/<unit>.html, spatial neurons
neurons/<layer>/<unit>_y<Y>_x<X>.html, circuits/<layer>/<unit>.html, static/site.css + site.js
(no CDN: the site works from file:// offline), search.js (the index's unit search data: a
script assignment, since fetch() of local JSON fails on file://), manifest.json.
Every page is written atomically; jinja2 autoescapes every name and label; data embedded for
scripts goes through `_json_script` (no `</script>` can close it early).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Optional
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from ..fileio import pid_alive, write_manifest, write_text
from .pages import CircuitPage, Img, LayerPage, ModelGraph, NeuronPage, SiteData, SpatialNeuronPage

STATIC_FILES = ("site.css", "site.js")


def slug(name: str) -> str:
    """A file-name-safe form of a layer name; a short hash keeps distinct names distinct."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "layer"
    if safe != name:
        safe += "-" + hashlib.sha1(name.encode()).hexdigest()[:6]
    return safe


def layer_path(layer: str) -> str:
    return f"layers/{slug(layer)}.html"


def neuron_path(layer: str, unit: int) -> str:
    return f"neurons/{slug(layer)}/{int(unit)}.html"


def circuit_path(layer: str, unit: int) -> str:
    return f"circuits/{slug(layer)}/{int(unit)}.html"


def spatial_path(layer: str, unit: int, y: int, x: int) -> str:
    return f"neurons/{slug(layer)}/{int(unit)}_y{int(y)}_x{int(x)}.html"


SEARCH_DATA = "search.js"


def _json_script(value) -> Markup:
    """JSON for a <script> element: compact, deterministic, and with <, > and & escaped so no
    label can end the element or start markup."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=False, allow_nan=False)
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vizsuite.gallery", "templates"),
        autoescape=True,  # every name, label and caption is escaped, whatever the extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    env.filters["json_script"] = _json_script
    return env


def _num(value: float, digits: int = 3) -> str:
    """Compact number formatting for activation values and weights."""
    value = float(value)
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.001:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


# ------------------------------------------------------------------------------ circuit SVG

@dataclass
class _Node:
    layer: str
    unit: int
    x: float
    y: float
    thumb: Optional[str]
    href: Optional[str]


@dataclass
class _Edge:
    x1: float
    y1: float
    x2: float
    y2: float
    weight: float
    width: float
    colour: str


POSITIVE, NEGATIVE = "#c2410c", "#1d4ed8"  # same sign colours as the weight heatmaps


def circuit_layout(page: CircuitPage, url: Callable[[str], str], unit_href: Callable[[str, int], Optional[str]],
                   width: int = 800, node: int = 72, row: int = 170):
    """Positions for the inline SVG: the unit on top, each earlier layer one row lower."""
    nodes: dict[tuple[str, int], _Node] = {}
    for depth, level in enumerate(page.levels):
        step = width / max(1, len(level))
        for i, n in enumerate(level):
            nodes[(n.layer, n.unit)] = _Node(n.layer, n.unit, step * (i + 0.5), 30 + depth * row + node / 2,
                                             url(n.thumb.src) if n.thumb else None, unit_href(n.layer, n.unit))
    biggest = max((abs(e.weight) for e in page.edges), default=1.0) or 1.0
    edges = []
    for e in page.edges:
        a, b = nodes.get(tuple(e.src)), nodes.get(tuple(e.dst))
        if a is None or b is None:
            continue
        edges.append(_Edge(a.x, a.y - node / 2, b.x, b.y + node / 2 + 16, e.weight,
                           round(0.75 + 5.0 * abs(e.weight) / biggest, 2), POSITIVE if e.weight >= 0 else NEGATIVE))
    height = 30 + max(1, len(page.levels)) * row
    return {"nodes": list(nodes.values()), "edges": edges, "width": width, "height": height, "size": node}


# ------------------------------------------------------------------------------ model graph SVG

@dataclass
class _GNode:
    name: str
    label: str
    kind: str  # layer | branch | input
    merge: Optional[str]
    x: float  # centre
    y: float  # top
    w: float
    href: Optional[str]
    here: bool
    title: str


def graph_targets(graph: ModelGraph, built: Iterable[str]) -> dict[str, str]:
    """{graph node: built layer it opens}: the node itself, or for a built container (a stage
    `blocks.3` holding `blocks.3.0` ...) the last node inside it, whose output is the container's."""
    names = [n.name for n in graph.nodes if n.kind == "layer"]
    out: dict[str, str] = {}
    for layer in built:
        if layer in names:
            out[layer] = layer
            continue
        inside = [n for n in names if n.startswith(layer + ".")]
        if inside:
            out.setdefault(inside[-1], layer)
    return out


def in_graph(graph: Optional[ModelGraph], layer: str) -> list[str]:
    """The graph nodes a layer page highlights: the layer's node, or every node inside it."""
    if graph is None:
        return []
    names = [n.name for n in graph.nodes if n.kind in ("layer", "branch")]
    return [layer] if layer in names else [n for n in names if n.startswith(layer + ".")]


def graph_layout(graph: ModelGraph, layer_href: Callable[[str], Optional[str]], here: Iterable[str] = (),
                 row: int = 30, box: int = 20, trunk_w: int = 200, branch_w: int = 132):
    """Positions for the model-graph SVG: trunk layers down the middle one per row, the
    branches of a merge side by side on the row above it, residual skips as arcs on the right."""
    rows: list[list] = [[("input", "input", "input", None, "")]]
    for n in graph.nodes:
        if n.kind not in ("layer", "branch"):
            continue
        title = f"{n.name} ({n.type}) {' x '.join(map(str, n.shape))}"
        entry = (n.name, n.name, n.kind, n.merge, title)
        if n.kind == "branch" and rows[-1] and rows[-1][-1][2] == "branch":
            rows[-1].append(entry)
        else:
            rows.append([entry])
    width = max(trunk_w + 120, max(len(r) for r in rows) * (branch_w + 8) + 16)
    nodes: dict[str, _GNode] = {}
    for i, r in enumerate(rows):
        w = trunk_w if r[0][2] != "branch" else branch_w
        step = width / len(r)
        for j, (name, label, kind, merge, title) in enumerate(r):
            nodes[name] = _GNode(name, label, kind, merge, step * (j + 0.5) if kind == "branch" else width / 2,
                                 10 + i * row, w if kind != "input" else 80,
                                 layer_href(name) if kind != "input" else None, False, title)
    here = set(here)
    for n in nodes.values():
        n.here = n.name in here
    edges = []
    for e in graph.edges:
        a, b = nodes.get(e.src), nodes.get(e.dst)
        if a is None or b is None:
            continue
        if e.kind == "skip":
            x1, y1 = a.x + a.w / 2, a.y + box / 2
            x2, y2 = b.x + b.w / 2, b.y + box / 2
            bend = 26 + 6 * min(6, (b.y - a.y) / row)
            edges.append({"kind": "skip", "d": f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 + bend:.1f},{y2:.1f} "
                                              f"{x2 + 3:.1f},{y2:.1f}", "lx": x2 + bend * 0.8, "ly": (y1 + y2) / 2 + 4})
        else:
            edges.append({"kind": "flow", "d": f"M{a.x:.1f},{a.y + box:.1f} L{b.x:.1f},{b.y:.1f}"})
    return {"nodes": list(nodes.values()), "edges": edges, "width": round(width), "height": 10 + len(rows) * row,
            "box": box}


# ------------------------------------------------------------------------------ writer

class _Site:
    def __init__(self, data: SiteData, root: Path, out: Optional[Path] = None):
        self.data = data
        self.root = root            # the site: what pages link to (assets) is checked here
        self.out = out or root      # where pages are written (a staging folder, swapped in after)
        self.layer_pages = {p.name: layer_path(p.name) for p in data.layers}
        self.neuron_pages = {(n.layer, n.unit): neuron_path(n.layer, n.unit) for n in data.neurons}
        self.circuit_pages = {(c.layer, c.unit): circuit_path(c.layer, c.unit) for c in data.circuits}
        self.spatial_pages = {(s.layer, s.unit, s.y, s.x): spatial_path(s.layer, s.unit, s.y, s.x) for s in data.spatial}
        self.graph_links = graph_targets(data.model.graph, self.layer_pages) if data.model.graph else {}
        self.env = _env()
        self.missing: list[str] = []

    def context(self, page_path: str) -> dict:
        here = posixpath.dirname(page_path)

        def url(target: str) -> str:
            target = target.lstrip("/")
            if not (self.root / target).exists() and not (self.out / target).exists() \
                    and not target.endswith(".html"):
                self.missing.append(f"{page_path}: {target}")
            return quote(posixpath.relpath(target, here or "."), safe="/._-~")

        def unit_href(layer: str, unit: int) -> Optional[str]:
            p = self.neuron_pages.get((layer, int(unit)))
            return url(p) if p else None

        def layer_href(layer: str) -> Optional[str]:
            p = self.layer_pages.get(layer)
            return url(p) if p else None

        def circuit_href(layer: str, unit: int) -> Optional[str]:
            p = self.circuit_pages.get((layer, int(unit)))
            return url(p) if p else None

        def page_href(target: str) -> Optional[str]:
            """A link to a page of this site (or one already in it), else None: nothing dangles."""
            target = target.lstrip("/")
            return url(target) if target in self.known_pages() or (self.root / target).is_file() else None

        def spatial_of(layer: str, unit: int) -> list:
            return [(s, url(self.spatial_pages[(s.layer, s.unit, s.y, s.x)])) for s in self.data.spatial
                    if s.layer == layer and s.unit == int(unit)]

        return {"url": url, "unit_href": unit_href, "layer_href": layer_href, "circuit_href": circuit_href,
                "page_href": page_href, "spatial_of": spatial_of,
                "model": self.data.model, "title": self.data.title or f"{self.data.model.name} gallery",
                "home": url("index.html"), "static": lambda name: url(f"static/{name}"),
                "layout": lambda page: circuit_layout(page, url, unit_href),
                "graph_layout": lambda graph, here=(): graph_layout(
                    graph, lambda n: layer_href(self.graph_links.get(n, "")), in_graph(graph, here) if here else ()),
                "in_graph": lambda layer: in_graph(self.data.model.graph, layer)}

    def known_pages(self) -> set[str]:
        return {"index.html", *self.layer_pages.values(), *self.neuron_pages.values(),
                *self.circuit_pages.values(), *self.spatial_pages.values()}

    def cards(self, page: LayerPage, page_path: str) -> list[dict]:
        """The layer page's grid as data for site.js (hrefs relative to the page)."""
        ctx = self.context(page_path)
        return [{"u": c.unit, "h": ctx["unit_href"](page.name, c.unit),
                 "t": ctx["url"](c.thumb.src) if c.thumb else None,
                 "d": c.description or c.caption or "", "p": c.caption, "m": _finite(c.mean_activation),
                 "s": _finite(c.selectivity), "c": list(c.top_classes), "k": list(c.concepts)}
                for c in page.units]

    def search_data(self) -> dict:
        """Every built unit for the index's search (hrefs relative to the site root)."""
        ctx = self.context("index.html")
        units = []
        for page in self.data.layers:
            for c in page.units:
                units.append({"l": page.name, "u": c.unit,
                              "h": ctx["unit_href"](page.name, c.unit) or ctx["layer_href"](page.name),
                              "t": ctx["url"](c.thumb.src) if c.thumb else None,
                              "d": c.description or c.caption or "", "c": list(c.top_classes),
                              "k": list(c.concepts), "s": _finite(c.selectivity)})
        return {"units": units}

    def render(self, template: str, page_path: str, **values) -> Path:
        html = self.env.get_template(template).render(**self.context(page_path), page_path=page_path, **values)
        return write_text(self.out / page_path, html)


def _finite(value) -> Optional[float]:
    """A JSON-safe number (None for unknown or non-finite), rounded so pages stay byte-stable."""
    if value is None:
        return None
    value = float(value)
    return round(value, 6) if value == value and abs(value) != float("inf") else None


def write_site(data: SiteData, site_dir: str | Path, *, command: Optional[list[str]] = None,
               check_images: bool = True) -> list[dict]:
    """Write every page of `data` under `site_dir`; returns the manifest items.

    Images must already be in the site (Img.src relative to site_dir); with `check_images`
    a missing one raises FileNotFoundError, listing them all (pages still written).
    """
    root = Path(site_dir)
    root.mkdir(parents=True, exist_ok=True)
    _clean_staging(root)
    # every page goes into a private staging folder first, then the folders and files are
    # swapped in at once: a build killed while writing pages leaves the previous, complete site
    staging = Path(tempfile.mkdtemp(prefix=f".pages.{os.getpid()}.", suffix=".part", dir=root))
    try:
        items, missing = _write_pages(data, root, staging, command)
        _swap_in(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if check_images and missing:
        raise FileNotFoundError(f"{len(missing)} image(s) referenced but not in the site: "
                                + "; ".join(sorted(set(missing))[:10]))
    return items


def _write_pages(data: SiteData, root: Path, out: Path, command) -> tuple[list[dict], list[str]]:
    site = _Site(data, root, out)
    for name in STATIC_FILES:  # first: pages check that what they reference exists
        text = resources.files("vizsuite.gallery").joinpath("static", name).read_text("utf-8")
        write_text(out / "static" / name, text)
    model = data.model.name
    items: list[dict] = [{"file": f"static/{n}", "kind": "static"} for n in STATIC_FILES]

    write_text(out / SEARCH_DATA, "// unit search data for index.html (a script: works from file://)\n"
               f"window.VIZSUITE_SEARCH = {_json_script(site.search_data())};\n")
    items.append({"file": SEARCH_DATA, "kind": "search"})
    site.render("index.html.j2", "index.html", layers=data.layers)
    items.append({"file": "index.html", "kind": "index", "model": model})

    layer_names = [p.name for p in data.layers]
    for i, page in enumerate(data.layers):
        path = site.layer_pages[page.name]
        site.render("layer.html.j2", path, page=page, cards=site.cards(page, path),
                    prev=layer_names[i - 1] if i > 0 else None,
                    next=layer_names[i + 1] if i + 1 < len(layer_names) else None)
        items.append({"file": path, "kind": "layer", "model": model, "layer": page.name,
                      "units": [c.unit for c in page.units]})

    neurons = _ordered_neurons(data)
    for i, page in enumerate(neurons):
        path = site.neuron_pages[(page.layer, page.unit)]
        prev = neurons[i - 1] if i > 0 else None
        nxt = neurons[i + 1] if i + 1 < len(neurons) else None
        site.render("neuron.html.j2", path, page=page,
                    prev=(prev.layer, prev.unit) if prev else None, next=(nxt.layer, nxt.unit) if nxt else None)
        items.append({"file": path, "kind": "neuron", "model": model, "layer": page.layer, "unit": page.unit})

    for page in data.spatial:
        path = site.spatial_pages[(page.layer, page.unit, page.y, page.x)]
        site.render("spatial.html.j2", path, page=page)
        items.append({"file": path, "kind": "spatial_neuron", "model": model, "layer": page.layer,
                      "unit": page.unit, "y": page.y, "x": page.x})

    for page in data.circuits:
        path = site.circuit_pages[(page.layer, page.unit)]
        site.render("circuit.html.j2", path, page=page)
        items.append({"file": path, "kind": "circuit", "model": model, "layer": page.layer, "unit": page.unit,
                      "layers": [lvl[0].layer for lvl in page.levels if lvl]})
    write_manifest(out, items, command=command, model=model, fingerprint=data.model.fingerprint)
    return items, site.missing


#: what a build writes at the site's top level (assets and .cache are the task store's)
PAGE_ENTRIES = ("static", "layers", "neurons", "circuits", SEARCH_DATA, "index.html", "manifest.json")


def _swap_in(staging: Path, root: Path) -> None:
    """Move the staged pages into the site: each folder of the previous build is renamed away
    and the new one renamed in (index.html and the manifest last), so pages of units no longer
    built disappear with their folder. Another build swapping at the same time wins or loses
    whole folders, never half of one."""
    trash = Path(tempfile.mkdtemp(prefix=f".old.{os.getpid()}.", suffix=".part", dir=root))
    try:
        for name in PAGE_ENTRIES:
            new, final = staging / name, root / name
            if not new.exists():
                if final.is_dir():  # e.g. no circuit pages any more
                    os.replace(final, trash / name)
                continue
            if new.is_file():
                os.replace(new, final)
                continue
            for _ in range(5):  # a concurrent build may put its folder back in between
                if final.exists():
                    os.replace(final, Path(tempfile.mkdtemp(dir=trash)) / name)
                try:
                    os.rename(new, final)
                    break
                except OSError:
                    continue
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _clean_staging(root: Path) -> None:
    """Remove staging folders of builds that died while writing pages."""
    for entry in root.glob(".*.part"):
        parts = entry.name.split(".")  # '', pages|old, pid, rand, 'part'
        if len(parts) >= 5 and parts[1] in ("pages", "old") and parts[2].isdigit():
            if not pid_alive(int(parts[2])):
                shutil.rmtree(entry, ignore_errors=True)


def _ordered_neurons(data: SiteData) -> list[NeuronPage]:
    """Neuron pages in layer order (layer pages' order), then unit order: prev/next follow it."""
    rank = {p.name: i for i, p in enumerate(data.layers)}
    rank.update({l.name: len(rank) + i for i, l in enumerate(data.model.layers) if l.name not in rank})
    return sorted(data.neurons, key=lambda n: (rank.get(n.layer, len(rank)), n.layer, n.unit))


def images_in(pages: Iterable[object]) -> list[Img]:
    """Every Img referenced by some page data (for copying assets into a site)."""
    found: list[Img] = []

    def walk(obj):
        if isinstance(obj, Img):
            found.append(obj)
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                walk(o)
        elif hasattr(obj, "__dataclass_fields__"):
            for name in obj.__dataclass_fields__:
                walk(getattr(obj, name))

    walk(list(pages))
    return found
