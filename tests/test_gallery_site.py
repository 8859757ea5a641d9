"""Site writing from fake page data: links resolve, names are escaped, no torch, browser check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vizsuite.gallery.pages import (CircuitEdge, CircuitNode, CircuitPage, ClassScore, Connection, Example, Img,
                                    LayerPage, LayerSummary, ModelInfo, NeuronPage, SiteData, UnitCard)
from vizsuite.gallery.site import write_site

from .site_helpers import check_links, parse_page

EVIL = "<script>alert('x')</script>"


def _png(site: Path, rel: str, seed: int, size: int = 32) -> Img:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    (site / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(site / rel)
    return Img(rel, alt=f"image {seed}", width=size, height=size)


def fake_site_data(site: Path) -> SiteData:
    """Two layers ('conv.a' with a weird sibling name), 3 units each, all sections filled."""
    layers = ["conv.a", "conv b/<2>"]
    n = iter(range(10_000))
    model = ModelInfo(name=f"tiny {EVIL}", description="fake & test", input_size=64, fingerprint="abc",
                      layers=[LayerSummary("stem", "Conv2d", (8, 32, 32), 8),
                              LayerSummary(layers[0], "Conv2d", (8, 16, 16), 8, True, 7),
                              LayerSummary(layers[1], "ReLU", (4, 8, 8), 4, False, 15)])
    layer_pages, neurons, circuits = [], [], []
    for li, layer in enumerate(layers):
        cards = []
        for unit in range(3):
            main = _png(site, f"assets/{li}/{unit}/main.png", next(n))
            cards.append(UnitCard(unit, main, caption=EVIL if unit == 1 else ""))
            inputs = [] if li == 0 else [
                Connection(layers[0], u, w, _png(site, f"assets/{li}/{unit}/in{u}.png", next(n)),
                           _png(site, f"assets/{li}/{unit}/heat{u}.png", next(n), 5))
                for u, w in ((0, 0.8), (2, -0.3), (7, 0.1))]  # unit 7 has no page: no link
            outputs = [] if li == 1 else [Connection(layers[1], 1, 0.5, None, None)]
            neurons.append(NeuronPage(
                layer, unit, main=main,
                diversity=[_png(site, f"assets/{li}/{unit}/div{d}.png", next(n)) for d in range(4)],
                negative=_png(site, f"assets/{li}/{unit}/neg.png", next(n)),
                positive_examples=[Example(_png(site, f"assets/{li}/{unit}/pos_ex{e}.png", next(n)), 3.5 - e,
                                           f"photo {EVIL}.jpg") for e in range(3)],
                negative_examples=[Example(_png(site, f"assets/{li}/{unit}/neg_ex{e}.png", next(n)), -1.0 - e)
                                   for e in range(2)],
                classes=[ClassScore(281, f"tabby {EVIL}", 0.7), ClassScore(1, "goldfish", 0.2)],
                inputs=inputs, outputs=outputs))
        layer_pages.append(LayerPage(layer, cards, deepdream=_png(site, f"assets/{li}/dream.png", next(n), 64)
                                     if li == 0 else None))
    root = CircuitNode(layers[1], 0, neurons[3].main)
    mid = [CircuitNode(layers[0], 0, neurons[0].main), CircuitNode(layers[0], 2, neurons[2].main)]
    low = [CircuitNode("stem", 5, None)]
    circuits.append(CircuitPage(layers[1], 0, [[root], mid, low],
                                [CircuitEdge((layers[0], 0), (layers[1], 0), 0.8),
                                 CircuitEdge((layers[0], 2), (layers[1], 0), -0.3),
                                 CircuitEdge(("stem", 5), (layers[0], 0), 0.4)]))
    return SiteData(model, layer_pages, neurons, circuits)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    write_site(fake_site_data(site), site, command=["test"])
    return site


def test_every_href_and_src_resolves(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 1 + 2 + 6 + 1
    assert check_links(site) > 100
    for page in pages:
        parser = parse_page(page)
        for img in parser.imgs:
            assert img.get("loading") == "lazy", (page, img)
        up = "../" * (len(page.relative_to(site).parts) - 1)
        # site.js everywhere; the index adds its search data, layer pages their embedded grid data
        extra = {"index.html": ["search.js"], "layers": ["INLINE"]}.get(page.relative_to(site).parts[0], [])
        assert parser.scripts == [up + "static/site.js"] + extra, page


def test_names_and_labels_are_escaped(site):
    for page in site.rglob("*.html"):
        text = page.read_text("utf-8")
        assert "<script>alert" not in text, page
    neuron = (site / "neurons" / "conv.a" / "0.html").read_text("utf-8")
    assert "tabby &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in neuron
    assert "photo &lt;script&gt;" in neuron


def test_pages_have_every_section(site):
    neuron = (site / "neurons" / "conv.a" / "1.html").read_text("utf-8")
    for part in ("Feature visualization", "Negative", "Diversity", "Most positive", "Most negative",
                 "Classes this unit most supports", "Strongest inputs", "Strongest outputs", 'rel="prev"',
                 'rel="next"', "3.5"):
        assert part in neuron, part
    assert neuron.count("div") >= 4
    layer = (site / "layers" / "conv.a.html").read_text("utf-8")
    assert "DeepDream" in layer and layer.count("../neurons/conv.a/") == 3
    circuit = next((site / "circuits").rglob("0.html")).read_text("utf-8")
    assert "<svg" in circuit and circuit.count("<line") == 3 and "<image" in circuit and "-0.3" in circuit
    index = (site / "index.html").read_text("utf-8")
    assert "8 × 16 × 16" in index and index.count("<tr") == 4


def test_manifest(site):
    manifest = json.loads((site / "manifest.json").read_text())
    assert {"vizsuite", "command", "created", "items"} <= set(manifest) and manifest["command"] == ["test"]
    kinds = [i["kind"] for i in manifest["items"]]
    assert kinds.count("neuron") == 6 and kinds.count("layer") == 2 and kinds.count("circuit") == 1
    for item in manifest["items"]:
        assert (site / item["file"]).is_file()
    assert not list(site.rglob("*.part"))


def test_missing_image_is_reported(tmp_path):
    data = fake_site_data(tmp_path)
    data.neurons[0].main = Img("assets/nope.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_site(data, tmp_path)


def test_site_writing_imports_no_torch():
    code = ("import sys; import vizsuite.gallery.site, vizsuite.gallery.pages, vizsuite.tasks; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.browser
def test_site_in_headless_chromium(site, tmp_path):
    from .browser import Browser, require_chromium

    require_chromium()
    shots = tmp_path / "shots"
    with Browser() as browser:
        for rel in ("index.html", "layers/conv.a.html", "neurons/conv.a/1.html", "circuits/"):
            page = site / rel if not rel.endswith("/") else next((site / rel).rglob("*.html"))
            report = browser.open(page, screenshot=shots / (page.stem + ".png"))
            assert report.errors == [], (rel, report.errors)
            assert all(r.startswith(("file:", "data:", "about:")) for r in report.requests), report.requests
            if rel != "index.html":
                assert report.images and not report.broken_images, (rel, report.broken_images)
            assert report.screenshot.stat().st_size > 5000
            with Image.open(report.screenshot) as shot:
                assert shot.size == (1280, 900)


def test_killed_while_writing_pages_keeps_the_previous_site(tmp_path, monkeypatch):
    """Pages go to a staging folder and are swapped in: a build dying mid-way through writing
    pages leaves the previous site complete (every link resolves), and nothing half-written."""
    from vizsuite.gallery import site as S

    root = tmp_path / "site"
    data = fake_site_data(root)
    S.write_site(data, root)
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*.html")}
    calls = {"n": 0}
    original = S._Site.render

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if killed while writing the third page
        return original(self, *a, **k)

    monkeypatch.setattr(S._Site, "render", dying)
    data.title = "the second build"  # its pages differ: a page written in place would show
    with pytest.raises(KeyboardInterrupt):
        S.write_site(data, root)
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*.html")}
    assert after == before and len(before) > 3
    assert not list(root.glob(".*.part"))
    check_links(root)
