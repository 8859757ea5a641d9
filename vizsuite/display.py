"""Inline display in notebooks (docs/notebook.md): PNG bytes and HTML image grids.

Result types (`optvis.RenderResult`, `attribution.Attribution`, `analysis.examples.DatasetExamples`,
`tasks.BuildReport`) define `_repr_png_` / `_repr_html_` with these helpers, so a result is
shown in a Jupyter cell without saving a file. Every caption is HTML-escaped; images are
embedded as base64 PNG data URIs (no files, no network).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Optional, Sequence

import numpy as np


def png_bytes(image) -> bytes:
    """PNG of an image: tensor C x H x W or array H x W [x C], floats in [0, 1] or uint8."""
    from PIL import Image

    from .images import to_uint8

    arr = np.asarray(image) if not hasattr(image, "detach") else None
    arr = arr if arr is not None and arr.dtype == np.uint8 else to_uint8(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def grid_html(images: Sequence, captions: Sequence[str] = (), *, title: Optional[str] = None,
              px: int = 128, columns: int = 8) -> str:
    """A grid of images with escaped captions (one HTML fragment)."""
    cells = []
    for i, img in enumerate(images):
        cap = html.escape(str(captions[i])) if i < len(captions) else ""
        cells.append(f'<figure style="margin:4px;display:inline-block;text-align:center;width:{px}px">'
                     f'<img src="{data_uri(img)}" width="{px}" style="image-rendering:pixelated;display:block">'
                     f'<figcaption style="font:11px sans-serif;overflow-wrap:anywhere">{cap}</figcaption></figure>')
    head = f'<div style="font:bold 12px sans-serif">{html.escape(title)}</div>' if title else ""
    width = columns * (px + 8)
    return f'<div class="vizsuite" style="max-width:{width}px">{head}{"".join(cells)}</div>'
