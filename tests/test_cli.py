"""The CLI front end: models, layers, predict, and the bad-input contract (exit 2, one line)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .cli_helpers import assert_bad_input, run_cli
from .conftest import CAT_CLASSES, MOBILENET_V2, PHOTOS


def test_help_everywhere():
    for cmd in ([], ["models"], ["layers"], ["predict"]):
        with pytest.raises(SystemExit) as exc:
            run_cli(*cmd, "--help")
        assert exc.value.code == 0


def test_models_lists_zoo():
    code, out, _ = run_cli("models", "--json")
    assert code == 0
    names = {m["name"] for m in json.loads(out)}
    assert {"efficientnet_lite0", "inceptionv1", "googlenet"} <= names


def test_layers_text_and_json():
    code, out, _ = run_cli("layers", "efficientnet_lite0")
    assert code == 0
    assert any(line.startswith("* blocks.4 ") for line in out.splitlines())
    code, out, _ = run_cli("layers", "efficientnet_lite0", "blocks.4", "blocks.5:3", "--json")
    data = json.loads(out)
    assert [l["name"] for l in data["layers"]] == ["blocks.4", "blocks.5"]
    assert data["layers"][0]["channels"] == 112 and data["layers"][0]["shape"] == [112, 14, 14]


def test_layers_inceptionv1_lucid_names():
    code, out, _ = run_cli("layers", "inceptionv1", "--random-weights", "--json")
    layers = {l["name"]: l for l in json.loads(out)["layers"]}
    assert layers["mixed4a"]["shape"] == [508, 14, 14] and layers["mixed4a"]["default"]
    assert layers["mixed4a_3x3_pre_relu_conv"]["channels"] == 204


def test_predict_chelsea_cli(chelsea_path):
    code, out, _ = run_cli("predict", "efficientnet_lite0", chelsea_path, "--json")
    assert code == 0
    top = json.loads(out)["results"][0]["top"]
    assert len(top) == 5 and top[0]["index"] in CAT_CLASSES


def test_predict_shared_mobilenet_cli(chelsea_path):
    if not MOBILENET_V2.is_file():
        pytest.skip("shared MobileNetV2 absent")
    code, out, _ = run_cli("predict", "torchvision:mobilenet_v2", "--weights", MOBILENET_V2,
                           "--mean", "0.5", "--std", "0.5", chelsea_path, "--json")
    assert code == 0 and json.loads(out)["results"][0]["top"][0]["index"] in CAT_CLASSES


def test_predict_converts_image_modes(tmp_path, chelsea_path):
    rgb = Image.open(chelsea_path)
    paths = []
    for mode in ("L", "RGBA", "CMYK", "P"):
        p = tmp_path / f"chelsea_{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        rgb.convert(mode).save(p)
        paths.append(p)
    # EXIF orientation 6 (rotate 90 CW to display): the stored pixels are rotated back
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "rotated.jpg"
    rgb.transpose(Image.Transpose.ROTATE_90).save(rotated, exif=exif)
    code, out, err = run_cli("predict", "efficientnet_lite0", *paths, rotated, "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    for res in results[1:]:  # grayscale loses colour; every colour variant stays a cat
        assert res["top"][0]["index"] in CAT_CLASSES, res
    from vizsuite.images import load_image
    assert load_image(rotated).size == rgb.size


def test_bad_inputs_exit_2_one_line(tmp_path, chelsea_path):
    assert_bad_input("layers", "efficientnet_lite", contains="did you mean: efficientnet_lite0")
    assert_bad_input("layers", "efficientnet_lite0", "blocks.44", contains="did you mean")
    assert_bad_input("layers", "efficientnet_lite0", "blocks.4:112", contains="112 channels")
    assert_bad_input("layers", "inceptionv1", contains="--weights")
    wrong = tmp_path / "wrong.pth"
    import torch
    torch.save({"x": torch.zeros(2)}, wrong)
    assert_bad_input("predict", "efficientnet_lite0", "--weights", wrong, chelsea_path, contains="do not fit")
    junk = tmp_path / "junk.pth"
    junk.write_text("junk")
    assert_bad_input("predict", "efficientnet_lite0", "--weights", junk, chelsea_path, contains="cannot read")
    assert_bad_input("predict", "efficientnet_lite0", tmp_path / "missing.jpg", contains="not found")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert_bad_input("predict", "efficientnet_lite0", empty, contains="empty")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert_bad_input("predict", "efficientnet_lite0", corrupt, contains="cannot read image")
    assert_bad_input("predict", "efficientnet_lite0", chelsea_path, "--std", "0", contains="positive")
    assert_bad_input("predict", contains="required")
    assert_bad_input("nosuchcommand")
    assert_bad_input("layers", "torchvision:resnet50", "--device", "cuda:0") if not torch.cuda.is_available() else None


def test_entry_point_subprocess_no_traceback(tmp_path):
    """The installed console script exits 2 with one line (no Python traceback) on bad input."""
    proc = subprocess.run([sys.executable, "-m", "vizsuite", "predict", "nosuchmodel", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
