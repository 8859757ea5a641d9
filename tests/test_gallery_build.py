"""Gallery builds end to end: links resolve, pages complete, escaping, kill -9 resume, browser."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .cli_helpers import assert_bad_input, run_cli
from .conftest import PHOTOS, ROOT
from .site_helpers import check_links

TINY = str(ROOT / "tests" / "models" / "tiny_gallery_model.py") + ":spec"
TINY_ARGS = ["--layers", "relu2,relu3", "--units", "3", "--steps", "3", "--size", "32", "--diversity", "2",
             "-k", "2", "--circuit", "relu3:1", "--quiet"]


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_images")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def site_files(site: Path) -> dict[str, bytes]:
    """Every published file (pages, assets) except the manifest's timestamped header and the cache."""
    out = {}
    for p in sorted(site.rglob("*")):
        rel = p.relative_to(site).as_posix()
        if p.is_file() and not rel.startswith(".cache/") and rel != "manifest.json":
            out[rel] = p.read_bytes()
    return out


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory, tiny_images) -> Path:
    site = tmp_path_factory.mktemp("tiny_site")
    code, out, err = run_cli("gallery", TINY, *TINY_ARGS, "--images", tiny_images, "-o", site)
    assert code == 0, err
    return site


def test_tiny_gallery_pages_and_links(tiny_site):
    assert check_links(tiny_site) > 50
    for layer in ("relu2", "relu3"):
        text = (tiny_site / "layers" / f"{layer}.html").read_text()
        assert text.count(f"../neurons/{layer}/") == 3 and "DeepDream" in text
        for u in range(3):
            page = (tiny_site / "neurons" / layer / f"{u}.html").read_text()
            for part in ("Feature visualization", "Negative", "Diversity", "Most positive", "Most negative",
                         "Classes this unit most supports"):
                assert part in page, (layer, u, part)
    # relu3 has inputs from relu2 (measured; weights shown or hidden with the reason), relu2 has
    # outputs into relu3; with images, every page says what the unit does
    page3 = (tiny_site / "neurons" / "relu3" / "0.html").read_text()
    assert ("Inputs it uses (measured)" in page3 or "No input changes this unit" in page3) \
        and "What this unit does" in page3
    assert "Strongest inputs (expanded weights)" in page3 or "are not shown" in page3
    # every unit is described (docs/describe.md): the line on its page, in the grid and the search index
    assert 'class="lead description-line"' in page3 and "<svg" in page3.split("description-line")[1]
    search = (tiny_site / "search.js").read_text()
    lines = re.findall(r'"d":"([^"]*)"', search)
    assert len(lines) == 6 and all(lines)
    page2 = (tiny_site / "neurons" / "relu2" / "0.html").read_text()
    assert "Strongest outputs" in page2 or "are not shown" in page2
    circuit = (tiny_site / "circuits" / "relu3" / "1.html").read_text()
    assert "<svg" in circuit and circuit.count("<line") >= 2
    manifest = json.loads((tiny_site / "manifest.json").read_text())
    kinds = [i["kind"] for i in manifest["items"]]
    assert kinds.count("neuron") == 6 and kinds.count("layer") == 2
    # issue 17: the index draws the traced graph (conv+ReLU pairs as one node, no Flatten), the
    # table has receptive fields; neurons link their centre spatial neuron; examples carry overlays
    index = (tiny_site / "index.html").read_text()
    assert index.count('class="node layer') == 5 and "9 px" in index and "whole image" in index
    assert kinds.count("spatial_neuron") == 6 and kinds.count("search") == 1
    neuron = (tiny_site / "neurons" / "relu2" / "0.html").read_text()
    assert 'href="0_y8_x8.html"' in neuron and "_map.png" in neuron and "full_" in neuron and "data-box=" in neuron
    assert (tiny_site / "neurons" / "relu2" / "0_y8_x8.html").is_file()
    cards = json.loads((tiny_site / "layers" / "relu2.html").read_text().split('id="unit-data">')[1].split("</script>")[0])
    assert [c["u"] for c in cards] == [0, 1, 2]
    assert all(isinstance(c["m"], float) and isinstance(c["s"], float) and c["c"] for c in cards)


def test_labels_are_escaped(tiny_site):
    texts = [p.read_text() for p in tiny_site.rglob("*.html")]
    assert not any("<script>alert" in t for t in texts)
    assert any("&lt;script&gt;alert(&#39;label&#39;)&lt;/script&gt;" in t for t in texts)


def test_rerun_reuses_everything(tiny_site, tiny_images):
    before = site_files(tiny_site)
    code, out, err = run_cli("gallery", TINY, *TINY_ARGS[:-1], "--images", tiny_images, "-o", tiny_site)
    assert code == 0, err
    assert " 0 computed" in out, out
    assert site_files(tiny_site) == before


def test_kill_9_midway_then_resume_equals_clean_build(tmp_path, tiny_images):
    args = ["gallery", TINY, *TINY_ARGS, "--images", str(tiny_images), "--steps", "40"]
    clean = tmp_path / "clean"
    assert run_cli(*args, "-o", clean)[0] == 0
    total = len(list((clean / ".cache" / "tasks").glob("*/done.json")))
    site = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "vizsuite", *args, "-o", str(site)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 240
    cache = site / ".cache" / "tasks"
    while time.time() < deadline and proc.poll() is None:
        if cache.is_dir() and len(list(cache.glob("*/done.json"))) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(cache.glob("*/done.json")))
    assert 0 < done_before < total, (done_before, total)
    code, out, err = run_cli(*args, "-o", site)
    assert code == 0, err
    assert f"{total - done_before} computed, {done_before} reused" in out, out
    assert not list(site.rglob("*.part"))
    assert site_files(site) == site_files(clean)


def test_bad_input_exit_2(tmp_path, tiny_images):
    assert_bad_input("gallery", TINY, "--layers", "relu9", "-o", tmp_path / "a", contains="did you mean")
    assert_bad_input("gallery", TINY, "--layers", "fc", "-o", tmp_path / "a", contains="spatial")
    assert_bad_input("gallery", TINY, "--layers", "relu2", "--units", "0,99", "-o", tmp_path / "a",
                     contains="8 channels")
    assert_bad_input("gallery", TINY, "--images", tmp_path / "nope", "-o", tmp_path / "a", contains="not found")
    assert_bad_input("gallery", TINY, "--circuit", "relu3:50", "-o", tmp_path / "a", contains="out of range")
    assert_bad_input("gallery", tmp_path / "missing.toml", "-o", tmp_path / "a", contains="not found")
    assert not (tmp_path / "a").exists()


def test_example_spec_is_valid():
    from vizsuite.cli.gallery import _read_spec

    spec = _read_spec(str(ROOT / "galleries" / "example.toml"))
    assert spec["model"] == "efficientnet_lite0" and Path(spec["images"]).is_dir()


@pytest.mark.browser
def test_efficientnet_gallery_in_headless_chromium(tmp_path):
    from .browser import Browser, require_chromium

    require_chromium()
    site = tmp_path / "site"
    code, out, err = run_cli("gallery", "efficientnet_lite0", "--layers", "blocks.1,blocks.2", "--units", "2",
                             "--steps", "4", "--size", "48", "--diversity", "2", "-k", "3", "--images", PHOTOS,
                             "--quiet", "-o", site)
    assert code == 0, err
    assert check_links(site) > 40
    neuron = (site / "neurons" / "blocks.2" / "1.html").read_text()
    assert neuron.count(".png") >= 10 and "Most positive" in neuron
    visible = "Array.from(document.querySelectorAll('#unit-grid .card')).filter(c => !c.hidden)"
    steps = {
        "index.html": [("eval", "document.querySelectorAll('svg g.node.layer').length"),
                       ("eval", "Array.from(document.querySelectorAll('svg g.node.built a')).map(a => a.getAttribute('href'))"),
                       ("type", "#unit-search", "blocks.2:1"),
                       ("eval", "Array.from(document.querySelectorAll('#search-results a')).map(a => a.getAttribute('href'))")],
        # filter by the first unit's top class: every card left shows that class
        "layers/blocks.2.html": [("eval", "JSON.parse(document.getElementById('unit-data').textContent)[0].c[0]"),
                                 ("eval", "(f => { f.value = JSON.parse(document.getElementById('unit-data')"
                                          ".textContent)[0].c[0]; f.dispatchEvent(new Event('input')); })"
                                          "(document.getElementById('unit-filter'))"),
                                 ("eval", f"{visible}.map(c => c.querySelector('figcaption').title)"),
                                 ("eval", "document.querySelectorAll('svg g.node.here').length")],
        "neurons/blocks.2/1.html": [("eval", "document.querySelector('.spatial a').getAttribute('href')")],
    }
    with Browser() as browser:
        reports = {}
        for rel in ("index.html", "layers/blocks.2.html", "neurons/blocks.2/1.html", "neurons/blocks.2/1_y14_x14.html"):
            report = browser.open(site / rel, screenshot=tmp_path / (rel.replace("/", "_") + ".png"),
                                  steps=steps.get(rel, ()))
            assert report.errors == [], (rel, report.errors)
            assert all(r.startswith(("file:", "data:", "about:")) for r in report.requests), report.requests
            if rel != "index.html":
                assert report.images and not report.broken_images, report.broken_images
            assert report.screenshot.stat().st_size > 5000
            reports[rel] = report
    nodes, built, _, hits = reports["index.html"].values
    assert nodes == 20  # bn1, 16 blocks, bn2, pool, classifier: one node per meaningful layer
    assert built == ["layers/blocks.1.html", "layers/blocks.2.html"]  # a stage opens from its last block
    assert hits == ["neurons/blocks.2/1.html"]
    label, _, titles, here = reports["layers/blocks.2.html"].values
    assert titles and all(label in t for t in titles) and here == 2  # blocks.2.0, blocks.2.1
    overlays = [i for i in reports["neurons/blocks.2/1.html"].images if "_map.png" in i["src"]]
    assert len(overlays) >= 3 and all(i["naturalWidth"] > 0 for i in overlays)
    assert reports["neurons/blocks.2/1.html"].values == ["1_y14_x14.html"]
