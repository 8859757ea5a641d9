"""`vizsuite attribute`: files, manifest, report; bad input -> one line, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from .cli_helpers import run_cli

FAST = ["--input-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def weird_photo(tmp_path_factory, chelsea_path):
    """The cat under a name that needs escaping in HTML."""
    path = tmp_path_factory.mktemp("weird") / "cat <b>&'x.png"
    shutil.copy(chelsea_path, path)
    return path


def test_attribute_writes_everything(tmp_path, chelsea_path, weird_photo, photos_dir):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("attribute", "efficientnet_lite0", chelsea_path, weird_photo,
                                   "--method", "lrp,ig,gradcam",
                                   "--steps", "8", "-o", out, *FAST)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    items = manifest["items"]
    assert len(items) == 6 and manifest["methods"] == ["lrp", "integrated_gradients", "gradcam"]
    for item in items:
        raw = np.load(out / item["file"])
        assert raw.shape == (3, 64, 64)
        for key in ("heatmap", "overlay", "input"):
            assert Image.open(out / item[key]).size == (64, 64)
        assert len(item["prediction"]) == 5 and item["target"]["kind"] == "class"
        assert item["target"]["rank"] == 1 and item["model"] == "efficientnet_lite0"
    lrp = [i for i in items if i["method"] == "lrp"][0]
    assert lrp["check"]["name"] == "conservation" and lrp["options"]["composite"] == "epsilon_plus_flat"
    ig = [i for i in items if i["method"] == "integrated_gradients"][0]
    assert ig["check"]["name"] == "completeness_delta" and ig["options"]["steps"] == 8
    html = (out / "report.html").read_text()
    assert "cat &lt;b&gt;&amp;&#39;x.png" in html and "<b>&'x" not in html
    assert "http://" not in html and "https://" not in html  # works offline from file://
    assert html.count("_heatmap.png") == 6


def test_heatmap_colours_positive_red_negative_blue(tmp_path, chelsea_path):
    out = tmp_path / "o"
    code, _, err = run_cli("attribute", "efficientnet_lite0", chelsea_path, "--method", "gxi",
                           "--target", "top2", "-o", out, *FAST)
    assert code == 0, err
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert [i["target"]["rank"] for i in items] == [1, 2]
    raw = np.load(out / items[0]["file"]).sum(0)
    heat = np.asarray(Image.open(out / items[0]["heatmap"])).astype(int)
    pos, neg = np.unravel_index(raw.argmax(), raw.shape), np.unravel_index(raw.argmin(), raw.shape)
    assert heat[pos][0] > heat[pos][2] and heat[neg][2] > heat[neg][0]


def test_unit_target(tmp_path, chelsea_path):
    out = tmp_path / "u"
    code, _, err = run_cli("attribute", "efficientnet_lite0", chelsea_path, "--method", "lrp,saliency",
                           "--target", "blocks.4:7", "-o", out, *FAST)
    assert code == 0, err
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert items[0]["target"] == {"kind": "unit", "unit": "blocks.4:7", "layer": "blocks.4", "channel": 7,
                                  "y": None, "x": None}


@pytest.mark.parametrize("args,match", [
    (["--method", "magic"], "unknown attribution method"),
    (["--method", "lrp", "--composite", "nope"], "unknown LRP composite"),
    (["--method", "lrp", "--composite", "custom:conv_stem=magic"], "unknown LRP rule"),
    (["--target", "no such thing"], "unknown class label"),
    (["--target", "blocks.99:1"], "unknown layer"),
    (["--target", "blocks.4:100000"], "out of range"),
    (["--target", "5000"], "out of range"),
    (["--steps", "0", "--method", "ig"], "at least 1"),
])
def test_bad_input_one_line_exit_2(tmp_path, chelsea_path, args, match):
    out = tmp_path / "bad"
    code, stdout, stderr = run_cli("attribute", "efficientnet_lite0", chelsea_path, "-o", out, *FAST, *args)
    assert code == 2, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error:") and match in stderr
    assert "Traceback" not in stderr and not out.exists()


def test_corrupt_and_missing_images(tmp_path, chelsea_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    for img, match in ((bad, "cannot read image"), (tmp_path / "nope.jpg", "not found")):
        code, _, stderr = run_cli("attribute", "efficientnet_lite0", chelsea_path, img, "-o", tmp_path / "o", *FAST)
        assert code == 2 and match in stderr and stderr.count("\n") == 1
        assert not (tmp_path / "o").exists()
