"""Results display themselves in notebooks: valid PNGs of the right size, escaped HTML."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vizsuite.display import grid_html, png_bytes

ROOT = Path(__file__).resolve().parents[1]


def _tiny():
    from vizsuite.zoo import load_model

    return load_model(str(ROOT / "tests" / "models" / "tiny_gallery_model.py") + ":spec")


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_render_result_shows_its_picture():
    from vizsuite.optvis import channel, render

    model = _tiny()
    r = render(model, [channel("conv2", 1), channel("conv2", 2)], size=40, steps=3, progress=False)
    img = _png(r._repr_png_())
    assert img.size == (40, 40) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), (np.clip(r.rgb()[0].permute(1, 2, 0).numpy(), 0, 1) * 255 + 0.5)
                          .astype(np.uint8))
    page = r._repr_html_()
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 2 and all(_png(base64.b64decode(u)).size == (40, 40) for u in uris)
    assert "channel(&quot;conv2&quot;, 1" in page  # the objective, escaped


def test_attribution_overlays_escape_labels():
    from vizsuite.attribution import attribute

    from .models.tiny_gallery_model import EVIL_LABEL

    model = _tiny()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = attribute(model, x, target=0, method="saliency")
    assert _png(res._repr_png_()).size == (32, 32)
    page = res._repr_html_()
    assert EVIL_LABEL not in page and "&lt;script&gt;" in page
    assert len(re.findall(r"data:image/png;base64,", page)) == 2


def test_grid_escapes_and_png_accepts_arrays():
    page = grid_html([np.zeros((4, 4, 3), np.uint8)], ["<b>x</b>"], title="<i>t</i>")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "&lt;i&gt;t&lt;/i&gt;" in page
    assert _png(png_bytes(np.ones((5, 7)))).size == (7, 5)
    assert _png(png_bytes(torch.rand(3, 6, 9))).size == (9, 6)


def test_dataset_examples_show_their_crops(tmp_path):
    from vizsuite.analysis.examples import compute_dataset_examples

    ex = compute_dataset_examples(_tiny(), ["relu2"], sorted((ROOT / "galleries" / "photos").glob("*.png"))[:4],
                                  k=2, units={"relu2": [0, 3]}, crop_px=24, progress=False)["relu2"]
    page = ex._repr_html_()
    assert page.count("data:image/png;base64,") == 4 and "relu2:3" in page
