"""Browsing a gallery in headless Chromium (DevTools): the index graph and search, a layer page's
client-side filter and sort, dataset-example overlays and the whole-image view; from file://,
no console errors. Fake page data (no torch): fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vizsuite.gallery.pages import (Example, GraphEdge, GraphNode, Img, LayerPage, LayerSummary, ModelGraph,
                                    ModelInfo, NeuronPage, SiteData, SpatialNeuronPage, UnitCard)
from vizsuite.gallery.site import write_site

from .site_helpers import check_links

EVIL = "<script>alert('x')</script>"
WORDS = ["striped texture", "dog snout", "round eye"]


def _png(site: Path, rel: str, seed: int, size: int = 16, rgba: bool = False) -> Img:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 4 if rgba else 3)) * 255).astype(np.uint8)
    (site / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(site / rel)
    return Img(rel, width=size, height=size)


def browse_data(site: Path) -> SiteData:
    graph = ModelGraph(
        [GraphNode("stem", "ReLU", (4, 16, 16), 4, receptive_field=3),
         GraphNode("mix_a", "ReLU", (2, 8, 8), 2, kind="branch"), GraphNode("mix_b", "ReLU", (2, 8, 8), 2, kind="branch"),
         GraphNode("mix", "Concat", (30, 8, 8), 30, merge="concat", receptive_field=7),
         GraphNode("blk", "Block", (30, 8, 8), 30, merge="add", receptive_field=11),
         GraphNode("head", "Linear", (5,), 5)],
        [GraphEdge("input", "stem"), GraphEdge("stem", "mix_a"), GraphEdge("stem", "mix_b"), GraphEdge("mix_a", "mix"),
         GraphEdge("mix_b", "mix"), GraphEdge("mix", "blk"), GraphEdge("mix", "blk", "skip"), GraphEdge("blk", "head")])
    layers = [LayerSummary(n.name, n.type, n.shape, n.channels, False, n.receptive_field) for n in graph.layers()]
    model = ModelInfo("browse", layers, input_size=16, graph=graph)
    cards = [UnitCard(u, _png(site, f"assets/mix/{u}.png", u), description=WORDS[u % 3] + (f" {EVIL}" if u == 4 else ""),
                      mean_activation=0.1 * u, selectivity=float((u * 7) % 30), top_classes=[f"class{u % 5}"])
             for u in range(30)]
    neurons = []
    for u in (0, 1):
        ex = [Example(_png(site, f"assets/ex/{u}_{i}.png", 100 + i), 2.0 - i, f"img{i}.jpg",
                      overlay=_png(site, f"assets/ex/{u}_{i}_map.png", 200 + i, rgba=True),
                      full=_png(site, f"assets/ex/full_{i}.png", 300 + i, size=32), box=(0.25, 0.125, 0.5))
              for i in range(2)]
        neurons.append(NeuronPage("mix", u, main=cards[u].thumb, positive_examples=ex,
                                  related=[("feature 3 of sae", "features/x/3.html")]))
    spatial = [SpatialNeuronPage("mix", 0, 4, 4, main=_png(site, "assets/mix/0_c.png", 9), receptive_field=7)]
    return SiteData(model, [LayerPage("mix", cards), LayerPage("blk", [UnitCard(0), UnitCard(1)])], neurons,
                    spatial=spatial)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("browse")
    write_site(browse_data(site), site)
    return site


def test_pages_link_and_escape(site):
    assert check_links(site) > 20
    layer = (site / "layers" / "mix.html").read_text("utf-8")
    assert "<script>alert" not in layer and "\\u003cscript\\u003e" in layer
    data = (site / "search.js").read_text("utf-8")
    assert data.startswith("//") and "window.VIZSUITE_SEARCH = " in data and "<" not in data.split("\n", 1)[1]
    units = json.loads(data.split(" = ", 1)[1].rstrip(";\n"))["units"]
    assert len(units) == 32 and units[0] == {"l": "mix", "u": 0, "h": "neurons/mix/0.html", "t": "assets/mix/0.png",
                                             "d": "striped texture", "c": ["class0"], "k": [], "s": 0.0}
    neuron = (site / "neurons" / "mix" / "0.html").read_text("utf-8")
    assert "0_y4_x4.html" in neuron and "feature 3 of sae" in neuron
    assert 'href="features' not in neuron  # the feature page does not exist: no dangling link


@pytest.mark.browser
def test_browsing_in_headless_chromium(site):
    from .browser import Browser, require_chromium

    require_chromium()
    visible = "Array.from(document.querySelectorAll('#unit-grid .card')).filter(c => !c.hidden)"
    with Browser() as browser:
        index = browser.open(site / "index.html", steps=[
            ("eval", "document.querySelectorAll('svg g.node.layer').length"),
            ("eval", "Array.from(document.querySelectorAll('svg g.node.layer a')).map(a => a.getAttribute('href'))"),
            ("type", "#unit-search", "striped"),
            ("eval", "document.querySelectorAll('#search-results li').length"),
            ("type", "#unit-search", "class3 dog"),
            ("eval", "Array.from(document.querySelectorAll('#search-results code')).map(c => c.textContent)")])
        layer = browser.open(site / "layers" / "mix.html", steps=[
            ("eval", "document.querySelectorAll('#unit-grid .card').length"),
            ("type", "#unit-filter", "stripe"),
            ("eval", f"{visible}.map(c => +c.dataset.unit)"),
            ("type", "#unit-filter", ""),
            ("eval", "(s => { s.value = 'selectivity'; s.dispatchEvent(new Event('change')); })"
                     "(document.getElementById('unit-sort'))"),
            ("eval", f"{visible}.slice(0, 3).map(c => +c.dataset.unit)"),
            ("eval", "document.querySelectorAll('svg g.node.here').length")])
        neuron = browser.open(site / "neurons" / "mix" / "0.html", steps=[
            ("eval", "document.querySelector('a.ex-open').click()"),
            ("eval", "new Promise(r => { const i = document.querySelector('.lightbox img');"
                     " i.complete ? r(i.naturalWidth) : i.onload = () => r(i.naturalWidth); })"),
            ("eval", "document.querySelector('.lightbox .rf').style.width")])
    for report in (index, layer, neuron):
        assert report.errors == [], (report.url, report.errors)
        assert all(r.startswith(("file:", "data:", "about:")) for r in report.requests), report.requests
        assert not report.broken_images, report.broken_images
    n_layers, hrefs, n_striped, _, dog3 = (index.values[i] for i in (0, 1, 3, 4, 5))
    assert n_layers == 4 and hrefs == ["layers/mix.html", "layers/blk.html"]
    assert n_striped == 10 and dog3 == ["mix:28", "mix:13"]  # u % 3 == 1 and u % 5 == 3, most selective first
    cards, _, striped, _, _, best, here = layer.values
    assert cards == 30 and striped == list(range(0, 30, 3))
    assert best == [17, 4, 21]  # selectivity (7u mod 30) = 29, 28, 27
    assert here == 1
    overlays = [i for i in neuron.images if "_map" in i["src"]]
    assert len(overlays) == 2 and all(i["naturalWidth"] == 16 for i in overlays)
    assert neuron.values[1] == 32 and neuron.values[2] == "50%"
