"""`vizsuite render`: a small real run, and the bad-input contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


from .cli_helpers import assert_bad_input, run_cli

KEYS = {"model", "layer", "unit", "objective", "value", "steps", "size", "seed", "seconds", "file"}


def test_render_writes_pngs_and_manifest(tmp_path):
    out = tmp_path / "out"
    code, stdout, err = run_cli("render", "efficientnet_lite0", "blocks.2:3", "blocks.3:5@7,7",
                                "--steps", "3", "--size", "48", "--seed", "1", "-o", out, "--quiet")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    items = manifest["items"]
    assert [i["unit"] for i in items] == ["blocks.2:3", "blocks.3:5@7,7"]
    assert [i["objective"] for i in items] == ["channel", "neuron"]
    for item in items:
        assert KEYS <= set(item)
        assert item["model"] == "efficientnet_lite0" and item["steps"] == 3 and item["size"] == 48
        assert item["seed"] == 1 and isinstance(item["value"], float)
        assert item["relu_grad"] == "redirect"  # efficientnet_lite0's default: Lucid's rule
        assert item["precision"] == "fp32"  # the resolved default: depthwise convolutions keep fp32
        img = Image.open(out / item["file"])
        assert img.size == (48, 48) and img.mode == "RGB"


def test_render_class_negative_alpha_diversity(tmp_path):
    out = tmp_path / "cls"
    code, _, err = run_cli("render", "efficientnet_lite0", "tabby", "281", "--objective", "class",
                           "--steps", "2", "--size", "32", "--negative", "--alpha", "-o", out, "--quiet")
    assert code == 0, err
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert [i["unit"] for i in items] == ["281", "281"]
    assert items[0]["label"].startswith("tabby") and items[0]["negative"] is True
    assert len({i["file"] for i in items}) == 2  # the same class twice keeps both files
    assert Image.open(out / items[0]["file"]).mode == "RGBA"
    out2 = tmp_path / "div"
    code, _, err = run_cli("render", "efficientnet_lite0", "blocks.2:1", "--diversity", "2",
                           "--steps", "2", "--size", "32", "-o", out2, "--quiet")
    assert code == 0, err
    items = json.loads((out2 / "manifest.json").read_text())["items"]
    assert [i["diversity_index"] for i in items] == [0, 1]
    a, b = (np.asarray(Image.open(out2 / i["file"])) for i in items)
    assert not np.array_equal(a, b)


def test_render_bf16_precision_option(tmp_path):
    out = tmp_path / "bf16"
    code, _, err = run_cli("render", "efficientnet_lite0", "blocks.2:3", "--precision", "bf16",
                           "--steps", "2", "--size", "32", "--relu-grad", "exact", "-o", out, "--quiet")
    assert code == 0, err
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert items[0]["precision"] == "bf16" and isinstance(items[0]["value"], float)
    assert items[0]["relu_grad"] == "exact"

@pytest.mark.parametrize("argv,contains", [
    (["blocks.99:1"], "unknown layer"),
    (["blocks.2:400"], "out of range"),
    (["blocks.2"], "bad unit"),
    (["blocks.2:1@99,0"], "out of range"),
    (["blocks.2:1", "--objective", "wobble"], "invalid choice"),
    (["blocks.2:1", "--precision", "fp16"], "invalid choice"),
    (["blocks.2:1", "--steps", "0"], "--steps"),
    (["blocks.2:1", "--objective", "direction"], "--vector"),
    (["blocks.2:1@1,1", "--objective", "channel"], "neuron"),
    (["notaclass", "--objective", "class"], "unknown class label"),
    (["5000", "--objective", "logprob"], "out of range"),
    (["conv_stem:1", "--objective", "layer"], "takes a layer"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, argv, contains):
    out = tmp_path / "never"
    assert_bad_input("render", "efficientnet_lite0", *argv, "--steps" if "--steps" not in argv else "--quiet",
                     *(["1"] if "--steps" not in argv else []), "-o", out, contains=contains)
    assert not out.exists()  # nothing partial left behind


def test_bad_model_exits_2(tmp_path):
    assert_bad_input("render", "no_such_model", "blocks.2:1", "-o", tmp_path / "x", contains="unknown model")
