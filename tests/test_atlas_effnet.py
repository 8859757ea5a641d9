"""An activation atlas of the real efficientnet_lite0 over the sample photos (small and quick)."""

from __future__ import annotations

import json

import pytest

from .cli_helpers import run_cli
from .test_atlas import page_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def atlas_site(tmp_path_factory, photos_dir):
    site = tmp_path_factory.mktemp("atlas") / "site"
    code, out, err = run_cli("atlas", "efficientnet_lite0", "blocks.4", "--images", photos_dir, "--grid", "3",
                             "--samples", "300", "--min-count", "2", "--steps", "4", "--icon-size", "32",
                             "--patches", "2", "--quiet", "-o", site)
    assert code == 0, err
    assert "atlas:" in out
    return site


def test_atlas_builds_with_every_icon_and_manifest(atlas_site):
    manifest = json.loads((atlas_site / "manifest.json").read_text())
    assert manifest["command"] and manifest["layer"] == "blocks.4" and manifest["grid"] == 3
    assert manifest["images"] == 8 and manifest["samples"] == 300
    items = manifest["items"]
    assert 1 <= len(items) <= 9
    assert sum(i["count"] for i in items) <= 300
    for item in items:
        assert (atlas_site / item["file"]).is_file() and (atlas_site / item["patches"]).is_file()
        assert item["count"] >= 2 and len(item["classes"]) == 5 and len(item["sources"]) == 2
        assert item["objective"] == "direction" and item["steps"] == 4 and item["seed"] == 0
    # hover/click data (what the page's script shows) matches the manifest
    cells = page_data(atlas_site, "atlas-data")["cells"]
    assert len(cells) == len(items)
    for item, cell in zip(items, cells):
        assert {k: item[k] for k in cell} == cell


def test_atlas_rerun_reuses_tasks(atlas_site, photos_dir):
    before = page_data(atlas_site, "atlas-data")["cells"]
    code, _, err = run_cli("atlas", "efficientnet_lite0", "blocks.4", "--images", photos_dir, "--grid", "3",
                           "--samples", "300", "--min-count", "2", "--steps", "4", "--icon-size", "32",
                           "--patches", "2", "-o", atlas_site)
    assert code == 0
    assert "computed=" not in err or "computed=0" in err  # every icon chunk came from the cache
    assert page_data(atlas_site, "atlas-data")["cells"] == before


@pytest.mark.browser
def test_atlas_page_renders_in_chromium(atlas_site, tmp_path):
    from .browser import open_page, require_chromium

    require_chromium()
    report = open_page(atlas_site / "index.html", screenshot=tmp_path / "atlas.png")
    assert not report.errors, report.errors
    assert not report.broken_images, report.broken_images
    icons = [i for i in report.images if "icons/" in (i["src"] or "")]
    cells = page_data(atlas_site, "atlas-data")["cells"]
    assert len(icons) == len(cells)  # the script drew every cell
    assert all(r.startswith(("file:", "data:", "about:")) for r in report.requests), report.requests
