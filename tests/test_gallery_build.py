"""Gallery builds end to end: links resolve, pages complete, escaping, kill -9 resume, browser."""

from __future__ import annotations

import json
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
    page2 = (tiny_site / "neurons" / "relu2" / "0.html").read_text()
    assert "Strongest outputs" in page2 or "are not shown" in page2
    circuit = (tiny_site / "circuits" / "relu3" / "1.html").read_text()
    assert "<svg" in circuit and circuit.count("<line") >= 2
    manifest = json.loads((tiny_site / "manifest.json").read_text())
    kinds = [i["kind"] for i in manifest["items"]]
    assert kinds.count("neuron") == 6 and kinds.count("layer") == 2


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
    with Browser() as browser:
        for rel in ("index.html", "layers/blocks.2.html", "neurons/blocks.2/1.html"):
            report = browser.open(site / rel, screenshot=tmp_path / (rel.replace("/", "_") + ".png"))
            assert report.errors == [], (rel, report.errors)
            assert all(r.startswith(("file:", "data:", "about:")) for r in report.requests), report.requests
            if rel != "index.html":
                assert report.images and not report.broken_images, report.broken_images
            assert report.screenshot.stat().st_size > 5000
