"""Photos in and PNGs out: loading any Pillow format, preprocessing per spec, atomic saves.

Tensors here are float N x 3 x H x W in [0, 1], RGB (docs/conventions.md).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError, first_line
from .fileio import atomic_path
from .limits import check_pixels

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image as RGB with EXIF orientation applied; UserError if missing/corrupt/empty.

    RGBA is composited over white (transparent pixels carry no colour), other modes
    (grayscale, CMYK, palette) are converted.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"image file is empty: {path}")
    bomb_limit = Image.MAX_IMAGE_PIXELS
    try:
        # our own limit, checked on the header before any pixel is decoded, replaces Pillow's
        # (whose warning would print twice and whose error is not a one-line message)
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_pixels(img.width, img.height, f"image {path}")
                img.load()
                img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"cannot read image {path}: {first_line(exc, 160)}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = bomb_limit
    if img.width == 0 or img.height == 0:
        raise UserError(f"image has no pixels: {path}")
    img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grayscale -> 8-bit L scaled to its range (Pillow's own
    conversion clips them at 255: a 16-bit photo would turn all white)."""
    mode = img.mode
    if mode == "La":
        return img.convert("RGBa").convert("RGBA")
    if not (mode.startswith("I") or mode == "F"):
        return img
    arr = np.asarray(img).astype(np.float64)
    arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    if mode.startswith("I;16"):
        arr = arr / 65535.0
    elif mode == "F" and arr.size and 0.0 <= arr.min() and arr.max() <= 1.0:
        pass  # float images in [0, 1]
    else:  # "I" (32-bit; 16-bit data in practice) or F outside [0, 1]
        top = arr.max() if arr.size else 0.0
        lo = min(0.0, arr.min()) if arr.size else 0.0
        scale = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top - lo
        arr = (arr - lo) / (scale if scale > 0 else 1.0)
    return Image.fromarray((np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "L")


def resize_center_crop(img: Image.Image, size: int, crop_pct: float = 0.875) -> Image.Image:
    """Resize the short side to size/crop_pct, then centre-crop size x size (timm's eval recipe)."""
    short = max(size, int(math.floor(size / crop_pct)))
    w, h = img.size
    scale = short / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


def augmented_views(img: Image.Image, views: int, seed: int, index: int) -> list[Image.Image]:
    """`views` images of one photo: itself, its mirror, then seeded random crops (60-95 % of
    each side, half of them mirrored). The draws depend only on (seed, index): image `index` of
    a list gets the same views whatever else is in the list (docs/conventions.md: randomness)."""
    if views < 1:
        raise UserError(f"augmentation views must be at least 1, got {views}")
    rng = np.random.default_rng([int(seed), int(index)])
    out = [img, ImageOps.mirror(img)][:views]
    w, h = img.size
    while len(out) < views:
        f = rng.uniform(0.6, 0.95)
        cw, ch = max(1, int(w * f)), max(1, int(h * f))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x0, y0, x0 + cw, y0 + ch))
        out.append(ImageOps.mirror(crop) if rng.random() < 0.5 else crop)
    return out


def to_array(img: Image.Image) -> np.ndarray:
    """PIL RGB -> float32 H x W x 3 in [0, 1]."""
    return np.asarray(img, dtype=np.float32) / 255.0


def load_batch(paths: Sequence[str | os.PathLike], size: int, crop_pct: float = 0.875):
    """Load and preprocess photos into a float tensor N x 3 x size x size in [0, 1]."""
    import torch

    arrays = [to_array(resize_center_crop(load_image(p), size, crop_pct)) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def find_images(folder: str | os.PathLike, *, note: bool = False) -> list[Path]:
    """Image files under a folder (recursive, sorted); UserError when none or not a folder.

    Subfolders that are vizsuite output (a manifest.json written by vizsuite: an output folder
    placed inside the photos) and hidden subfolders (a site's .cache) are left out; `note=True`
    says so on stderr.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"images folder not found: {folder}")
    outputs: dict[Path, bool] = {}
    found, skipped = [], {}
    for p in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        out = _output_folder(folder, p.relative_to(folder).parts[:-1], outputs)
        if out is None:
            found.append(p)
        else:
            skipped[out] = skipped.get(out, 0) + 1
    if skipped and note:
        where = ", ".join(str(d) for d in sorted(skipped))
        print(f"note: left out {sum(skipped.values())} image(s) in vizsuite output or hidden folder(s): {where}",
              file=sys.stderr)
    if not found:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return found


def _output_folder(root: Path, parts: tuple, cache: dict) -> Path | None:
    """The first subfolder on the way to an image that is hidden or holds a vizsuite manifest."""
    d = root
    for part in parts:
        d = d / part
        if d not in cache:
            cache[d] = part.startswith(".") or _is_vizsuite_output(d)
        if cache[d]:
            return d
    return None


def _is_vizsuite_output(folder: Path) -> bool:
    try:
        with open(folder / "manifest.json", encoding="utf-8", errors="replace") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return head.lstrip("{ \n\t").startswith('"vizsuite"')


def to_uint8(image) -> np.ndarray:
    """Tensor C x H x W / array H x W x C (or H x W) in [0, 1] -> uint8 H x W x C array."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().float().numpy()
        if image.ndim == 3:
            image = image.transpose(1, 2, 0)
    arr = np.asarray(image, dtype=np.float32)
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png(image, path: str | os.PathLike) -> Path:
    """Save an image (tensor C x H x W, or array) in [0, 1] as PNG, atomically."""
    arr = to_uint8(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
    return Path(path)


def contact_sheet(images: Iterable[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Tile equally sized uint8 H x W x 3 arrays into one grid (white gutters)."""
    images = list(images)
    if not images:
        raise ValueError("no images to tile")
    h, w = images[0].shape[:2]
    rows = math.ceil(len(images) / columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        sheet[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = img[..., :3]
    return sheet
