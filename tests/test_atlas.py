"""Atlas pieces on small data: grid binning, layout, and a tiny model with two planted features."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vizsuite.atlas import AtlasConfig, IconRecipe, build_atlas
from vizsuite.analysis.layout import bin_grid, cell_means, normalize, reduce_2d
from vizsuite.analysis.support import patch_box
from vizsuite.errors import UserError
from vizsuite.zoo.spec import ModelSpec, VisionModel

from .cli_helpers import assert_bad_input


def page_data(site: Path, data_id: str) -> dict:
    """The JSON the page's script reads (what hover/click shows)."""
    html = (site / "index.html").read_text("utf-8")
    m = re.search(rf'<script type="application/json" id="{data_id}">(.*?)</script>', html, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


# ---------------------------------------------------------------- pure pieces

def test_bin_grid_rows_follow_y_and_min_count_filters():
    coords = np.array([[0.0, 0.0], [0.1, 0.1], [0.99, 0.0], [1.0, 1.0], [0.6, 0.9]])
    cells = bin_grid(coords, 2, min_count=1)
    assert [(c.row, c.col, c.count) for c in cells] == [(0, 0, 2), (0, 1, 1), (1, 1, 2)]
    assert [(c.row, c.col) for c in bin_grid(coords, 2, min_count=2)] == [(0, 0), (1, 1)]
    assert len(bin_grid(coords, 1)) == 1 and bin_grid(coords, 1)[0].count == 5
    with pytest.raises(UserError, match="--grid"):
        bin_grid(coords, 0)


def test_cell_means_and_normalize():
    acts = np.arange(12, dtype=np.float32).reshape(4, 3)
    cells = bin_grid(np.array([[0, 0], [0, 0], [1, 1], [1, 1]], float), 2)
    assert np.allclose(cell_means(acts, cells), [[1.5, 2.5, 3.5], [7.5, 8.5, 9.5]])
    n = normalize(np.array([[2.0, 5.0], [4.0, 5.0]]))
    assert np.allclose(n, [[0, 0.5], [1, 0.5]])


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_reduce_separates_two_clusters_and_is_seeded(method):
    g = np.random.default_rng(0)
    a = np.abs(g.normal(size=(60, 16))) * 0.1
    a[:30, :4] += 2.0
    a[30:, 8:12] += 2.0
    coords, used = reduce_2d(a, method, seed=3)
    assert used == method and coords.shape == (60, 2)
    assert coords.min() >= 0 and coords.max() <= 1
    ca, cb = coords[:30].mean(0), coords[30:].mean(0)
    spread = max(coords[:30].std(0).max(), coords[30:].std(0).max())
    assert np.linalg.norm(ca - cb) > 3 * spread
    again, _ = reduce_2d(a, method, seed=3)
    assert np.allclose(coords, again)


def test_patch_box_stays_inside_the_image():
    assert patch_box(0, 0, (14, 14), 224) == (0, 0, 32, 32)
    assert patch_box(13, 13, (14, 14), 224) == (192, 192, 224, 224)
    left, top, right, bottom = patch_box(7, 3, (14, 14), 224)
    assert right - left == 32 and (left + right) / 2 == pytest.approx(3.5 * 16)


# ---------------------------------------------------------------- tiny model, planted features

RED = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0])
BLUE = torch.tensor([0.0, 0, 0, 0, 1, 1, 1, 1])


def tiny_model() -> VisionModel:
    """conv(1x1) -> relu at layer 'feat': channels 0-3 see red over blue, channels 4-7 blue over red
    (each with its own small twist), so red and blue textures activate two distinct directions."""
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 8, 1)
    with torch.no_grad():
        w = torch.zeros(8, 3)
        w[:4] = torch.tensor([1.0, 0.0, -1.0])
        w[4:] = torch.tensor([-1.0, 0.0, 1.0])
        w += 0.1 * torch.rand(8, 3, generator=g)
        conv.weight.copy_(w[:, :, None, None])
        conv.bias.fill_(0.05)
    head = nn.Linear(8, 2)
    with torch.no_grad():
        head.weight.copy_(torch.stack([RED - BLUE, BLUE - RED]))
        head.bias.zero_()
    net = nn.Sequential(OrderedDict(conv=conv, feat=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
                                    flat=nn.Flatten(), fc=head))
    spec = ModelSpec(name="tiny", builder=lambda: net, input_size=32, crop_pct=1.0, mean=(0, 0, 0),
                     std=(1, 1, 1), labels=("red", "blue"))
    model = VisionModel(net, spec).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def planted_images(tmp_path_factory) -> Path:
    """Two groups of textures: a_* red-dominant, b_* blue-dominant (random, seeded)."""
    folder = tmp_path_factory.mktemp("planted")
    g = np.random.default_rng(1)
    for group, colour in (("a", 0), ("b", 2)):
        for i in range(4):
            img = g.uniform(0.0, 0.35, size=(32, 32, 3))
            img[..., colour] += g.uniform(0.45, 0.65, size=(32, 32))
            Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{group}_{i}.png")
    return folder


def test_tiny_atlas_separates_planted_groups_and_icons_match(planted_images, tmp_path):
    from vizsuite.images import find_images
    from vizsuite.optvis import direction, evaluate

    model = tiny_model()
    site = tmp_path / "atlas"
    cfg = AtlasConfig(grid=6, samples=400, min_count=2, patches=3, seed=0, reduce="tsne",
                      icon=IconRecipe(size=32, steps=48, lr=0.1), progress=False)
    summary = build_atlas(model, "feat", find_images(planted_images), site, cfg)
    manifest = json.loads((site / "manifest.json").read_text())
    cells = manifest["items"]
    assert summary["cells"] == len(cells) > 1

    groups = {}
    for c in cells:
        names = {s["image"][0] for s in c["sources"]}
        assert len(names) == 1, f"cell {c['id']} mixes groups: {c['sources']}"
        groups[(c["row"], c["col"])] = names.pop()
    assert set(groups.values()) == {"a", "b"}
    # separate regions: the nearest cell of the other group is never a direct neighbour of most cells
    a = np.array([k for k, v in groups.items() if v == "a"])
    b = np.array([k for k, v in groups.items() if v == "b"])
    gap = np.abs(a[:, None, :] - b[None, :, :]).max(-1)  # Chebyshev distance between cells
    assert (gap.min(1) > 1).mean() > 0.5 and (gap.min(0) > 1).mean() > 0.5

    for c in cells:
        icon = torch.from_numpy(np.asarray(Image.open(site / c["file"]), np.float32) / 255).permute(2, 0, 1)[None]
        red = float(evaluate(model, direction("feat", RED), icon))
        blue = float(evaluate(model, direction("feat", BLUE), icon))
        want_red = groups[(c["row"], c["col"])] == "a"
        assert (red > blue) == want_red, (c["id"], red, blue)
        assert c["classes"][0]["label"] == ("red" if want_red else "blue")

    # the page's hover data is the manifest's
    data = page_data(site, "atlas-data")
    for item, cell in zip(cells, data["cells"]):
        assert {k: item[k] for k in cell} == cell

    # a rerun reuses every task and writes the same page data
    again = tmp_path / "again"
    cfg.cache = site / ".cache" / "tasks"
    build_atlas(model, "feat", find_images(planted_images), again, cfg)
    assert page_data(again, "atlas-data")["cells"] == data["cells"]


def test_class_atlas_keeps_only_supporting_positions(planted_images, tmp_path):
    from vizsuite.images import find_images

    model = tiny_model()
    cfg = AtlasConfig(grid=3, samples=200, min_count=1, patches=2, reduce="pca", class_label="red",
                      icon=IconRecipe(size=32, steps=2), progress=False)
    build_atlas(model, "feat", find_images(planted_images), tmp_path, cfg)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["target"] == "red"
    assert {s["image"][0] for c in manifest["items"] for s in c["sources"]} == {"a"}


# ---------------------------------------------------------------- bad input (exit 2, one line)

def test_atlas_bad_input(photos_dir, tmp_path):
    out = tmp_path / "site"
    assert_bad_input("atlas", "efficientnet_lite0", "blocks.4", "--images", photos_dir, "--grid", "0",
                     "-o", out, contains="--grid")
    assert_bad_input("atlas", "efficientnet_lite0", "blocks.4", "--images", tmp_path / "nowhere",
                     "-o", out, contains="not found")
    (tmp_path / "empty").mkdir()
    assert_bad_input("atlas", "efficientnet_lite0", "blocks.4", "--images", tmp_path / "empty",
                     "-o", out, contains="no images")
    assert_bad_input("atlas", "efficientnet_lite0", "blocks.99", "--images", photos_dir, "-o", out,
                     contains="unknown layer")
    assert_bad_input("atlas", "efficientnet_lite0", "blocks.4", "--images", photos_dir, "--class", "tabbby",
                     "-o", out, contains="tabby")
    assert_bad_input("atlas", "efficientnet_lite0", "classifier", "--images", photos_dir, "-o", out,
                     contains="no spatial positions")
    assert_bad_input("atlas", "efficientnet_lite0", "blocks.4", "--images", photos_dir, "--samples", "0",
                     "-o", out, contains="--samples")
    assert not (out / "index.html").exists() and not (out / "manifest.json").exists()
