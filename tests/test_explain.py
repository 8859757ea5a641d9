"""Building blocks of one image: chelsea is a cat, and the attribution sits on the cat."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from .cli_helpers import assert_bad_input, run_cli
from .conftest import CAT_CLASSES
from .test_atlas import page_data

pytestmark = pytest.mark.slow

ARGS = ("--layer", "blocks.4", "--steps", "2", "--icon-size", "32", "--units", "1", "--quiet")


def positive_share(values, box, size=224) -> tuple[float, float]:
    """Share of positive attribution whose position centre lies in box (x0, y0, x1, y1) of the
    model's input, and the share of positions there (what a uniform map would give)."""
    a = np.array(values)
    h, w = a.shape
    cy, cx = np.mgrid[0:h, 0:w]
    cy, cx = (cy + 0.5) * size / h, (cx + 0.5) * size / w
    x0, y0, x1, y1 = box
    inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    pos = np.clip(a, 0, None)
    return float(pos[inside].sum() / pos.sum()), float(inside.mean())


@pytest.fixture(scope="module")
def chelsea_site(tmp_path_factory, chelsea_path):
    site = tmp_path_factory.mktemp("explain") / "site"
    code, out, err = run_cli("explain", "efficientnet_lite0", chelsea_path, *ARGS, "-o", site)
    assert code == 0, err
    return site


def test_explain_chelsea_shows_a_cat(chelsea_site):
    manifest = json.loads((chelsea_site / "manifest.json").read_text())
    assert manifest["target"]["index"] in CAT_CLASSES
    html = (chelsea_site / "index.html").read_text()
    assert manifest["target"]["label"] in html
    for item in manifest["items"]:
        assert (chelsea_site / item["file"]).is_file()
    data = page_data(chelsea_site, "explain-data")
    assert data["grid"] == [14, 14] and len(data["positions"]) == 196
    drawn = {u["unit"] for u in data["units"]}
    assert all(t["unit"] in drawn for p in data["positions"] for t in p["units"])
    attr = next(i for i in manifest["items"] if i["role"] == "attribution")
    # chelsea (451 x 300) is a close-up: after the model's resize (short side -> 256) and centre crop
    # (offsets 80, 16) nearly all of the crop is cat, so the hand-made box is the face (eyes to
    # mouth: x 120..350, y 60..290 in the original), mapped into the crop
    s = 256 / 300
    face = (120 * s - 80, 60 * s - 16, 350 * s - 80, 290 * s - 16)
    share, area = positive_share(attr["values"], face)
    assert share > 0.5 and share > area, (share, area)


def test_explain_localizes_the_cat_on_a_grey_canvas(tmp_path, chelsea_path):
    """Chelsea pasted into a grey canvas: most positive attribution falls inside the pasted cat."""
    canvas = Image.new("RGB", (448, 448), (128, 128, 128))
    canvas.paste(Image.open(chelsea_path).convert("RGB").resize((270, 180)), (20, 30))
    path = tmp_path / "canvas.png"
    canvas.save(path)
    site = tmp_path / "site"
    code, _, err = run_cli("explain", "efficientnet_lite0", path, *ARGS, "-o", site)
    assert code == 0, err
    manifest = json.loads((site / "manifest.json").read_text())
    assert manifest["target"]["index"] in CAT_CLASSES
    attr = next(i for i in manifest["items"] if i["role"] == "attribution")
    s, off = 256 / 448, 16  # resize 448 -> 256, centre crop 224
    share, area = positive_share(attr["values"], (20 * s - off, 30 * s - off, 290 * s - off, 210 * s - off))
    assert share > 0.6 and area < 0.35, (share, area)


def test_explain_bad_input(tmp_path, chelsea_path):
    out = tmp_path / "site"
    assert_bad_input("explain", "efficientnet_lite0", tmp_path / "missing.png", "--layer", "blocks.4", "-o", out,
                     contains="not found")
    assert_bad_input("explain", "efficientnet_lite0", chelsea_path, "--layer", "blocks.42", "-o", out,
                     contains="unknown layer")
    assert_bad_input("explain", "efficientnet_lite0", chelsea_path, "--layer", "blocks.4", "--class", "kitty cat",
                     "-o", out, contains="unknown class")
    assert_bad_input("explain", "efficientnet_lite0", chelsea_path, "--layer", "blocks.4", "--units", "0",
                     "-o", out, contains="--units")
    assert not out.exists()


@pytest.mark.browser
def test_explain_page_renders_in_chromium(chelsea_site, tmp_path):
    from .browser import open_page, require_chromium

    require_chromium()
    report = open_page(chelsea_site / "index.html", screenshot=tmp_path / "explain.png")
    assert not report.errors, report.errors
    assert not report.broken_images, report.broken_images
    assert all(r.startswith(("file:", "data:", "about:")) for r in report.requests), report.requests


def test_explain_reuses_gallery_unit_renders(tmp_path):
    """A finished gallery render of a unit (the very task the gallery plans) is used as is."""
    import torch

    from vizsuite.atlas import ExplainConfig, IconRecipe, build_explain
    from vizsuite.images import save_png
    from vizsuite.gallery.build import GalleryConfig, _Plan
    from vizsuite.tasks import TaskStore

    from .test_atlas import tiny_model

    model = tiny_model()
    img = tmp_path / "red.png"
    Image.fromarray(np.full((32, 32, 3), (200, 30, 30), np.uint8)).save(img)
    store = TaskStore(tmp_path / "cache")
    planted = {}
    plan = _Plan(model, GalleryConfig(layers=["feat"], units={"feat": list(range(8))},
                                      recipe={"size": 32, "steps": 2, "model_px": 32}))
    for unit in range(8):
        task = plan.render("feat", unit, "channel")
        staging = store.staging(task)
        save_png(torch.full((3, 8, 8), unit / 8), staging / "image.png")
        planted[unit] = (staging / "image.png").read_bytes()
        store.publish(task, staging, {}, 0.1)
    site = tmp_path / "site"
    cfg = ExplainConfig(units=2, icon=IconRecipe(size=32, steps=2), progress=False, cache=tmp_path / "cache")
    summary = build_explain(model, img, "feat", site, cfg)
    assert summary["target"]["label"] == "red"
    units = page_data(site, "explain-data")["units"]
    assert units and all((site / u["file"]).read_bytes() == planted[u["unit"]] for u in units)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and (p / "done.json").is_file()
                and json.loads((p / "done.json").read_text())["kind"] != "render_unit"]
