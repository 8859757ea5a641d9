"""Procedurally generated concept folders (`vizsuite concepts make DIR`; docs/concepts.md).

Seeded textures so TCAV and probes run offline: stripes at four orientations, dots,
checkerboards, zigzags, colour fields, and random-noise controls (the counterexample pool).
Every image draws its own colours, scale, phase and a small jitter of the orientation from one
numpy generator seeded by (seed, concept, index): the same seed gives the same pixels, and
adding a concept changes none of the others.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import UserError
from ..fileio import current_umask


def _rng(seed: int, name: str, index: int) -> np.random.Generator:
    h = int.from_bytes(hashlib.sha256(f"{seed}/{name}/{index}".encode()).digest()[:8], "little")
    return np.random.default_rng(h)


def _colours(rng) -> tuple[np.ndarray, np.ndarray]:
    """Two contrasting colours: a random one and one far from it."""
    a = rng.uniform(0, 1, 3)
    b = np.clip(1.0 - a + rng.normal(0, 0.1, 3), 0, 1)
    return a, b


def _grid(size: int, angle_deg: float):
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    t = np.deg2rad(angle_deg)
    return x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)


def _paint(mask: np.ndarray, rng) -> np.ndarray:
    a, b = _colours(rng)
    m = mask[..., None]
    return m * a + (1 - m) * b


def _stripes(angle: float) -> Callable:
    """Stripes whose lines run at `angle` degrees (0: horizontal, 90: vertical; counter-clockwise
    on screen, where y points down)."""
    def draw(rng, size):
        _, u = _grid(size, -angle + rng.uniform(-6, 6))
        period = rng.uniform(size / 14, size / 6)
        return _paint((np.sin(2 * np.pi * (u / period + rng.uniform())) > 0).astype(np.float64), rng)
    return draw


def _dots(rng, size):
    period = rng.uniform(size / 10, size / 5)
    u, v = _grid(size, rng.uniform(0, 90))
    fu, fv = (u / period + rng.uniform()) % 1 - 0.5, (v / period + rng.uniform()) % 1 - 0.5
    r = rng.uniform(0.18, 0.32)
    return _paint((fu ** 2 + fv ** 2 < r ** 2).astype(np.float64), rng)


def _checkerboard(rng, size):
    period = rng.uniform(size / 10, size / 4)
    u, v = _grid(size, rng.uniform(-10, 10))
    cu, cv = np.floor(u / period + rng.uniform()), np.floor(v / period + rng.uniform())
    return _paint(((cu + cv) % 2 == 0).astype(np.float64), rng)


def _zigzag(rng, size):
    period = rng.uniform(size / 12, size / 6)
    amp = rng.uniform(0.5, 1.2) * period
    u, v = _grid(size, rng.uniform(-8, 8))
    tri = np.abs((u / period + rng.uniform()) % 2 - 1) * amp   # a triangle wave along u
    return _paint((np.sin(2 * np.pi * (v + tri) / period) > 0).astype(np.float64), rng)


def _field(rgb: Sequence[float]) -> Callable:
    def draw(rng, size):
        base = np.clip(np.asarray(rgb) + rng.normal(0, 0.08, 3), 0, 1)
        y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        shade = 0.85 + 0.3 * (rng.uniform() * x + (1 - rng.uniform()) * y) / 2
        img = base[None, None] * shade[..., None] + rng.normal(0, 0.03, (size, size, 3))
        return np.clip(img, 0, 1)
    return draw


def _noise(rng, size):
    """A random control: white, blocky or smooth noise in random colours."""
    kind = rng.integers(3)
    if kind == 0:
        return rng.uniform(0, 1, (size, size, 3))
    cells = int(rng.integers(2, 16)) if kind == 1 else int(rng.integers(3, 8))
    small = rng.uniform(0, 1, (cells, cells, 3))
    from PIL import Image

    img = Image.fromarray((small * 255).astype(np.uint8)).resize(
        (size, size), Image.NEAREST if kind == 1 else Image.BICUBIC)
    return np.asarray(img, dtype=np.float64) / 255.0


#: concept name -> drawing function (rng, size) -> H x W x 3 in [0, 1]
CONCEPTS: dict = {
    "stripes_0": _stripes(0), "stripes_45": _stripes(45), "stripes_90": _stripes(90), "stripes_135": _stripes(135),
    "dots": _dots, "checkerboard": _checkerboard, "zigzag": _zigzag,
    "red": _field((0.85, 0.1, 0.1)), "green": _field((0.1, 0.7, 0.15)), "blue": _field((0.1, 0.2, 0.85)),
    "yellow": _field((0.9, 0.85, 0.1)),
}
RANDOM = "random"


@dataclass
class MadeConcept:
    """One generated folder: its name, path, image count."""

    name: str
    folder: Path
    images: int


def draw(name: str, index: int, size: int = 128, seed: int = 0) -> np.ndarray:
    """Image `index` of a generated concept (H x W x 3 uint8)."""
    fn = _noise if name == RANDOM else CONCEPTS.get(name)
    if fn is None:
        from ..errors import close_matches

        raise UserError(f"unknown generated concept {name!r} (known: {', '.join(list(CONCEPTS) + [RANDOM])})"
                        f"{close_matches(name, list(CONCEPTS) + [RANDOM])}")
    img = fn(_rng(seed, name, index), size)
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_concepts(out_dir: str | os.PathLike, names: Optional[Sequence[str]] = None, *, count: int = 20,
                  random_count: int = 60, size: int = 128, seed: int = 0,
                  progress: bool = False) -> list[MadeConcept]:
    """Write DIR/NAME/NNN.png for each concept (default: all of `CONCEPTS`) and DIR/random
    (`random_count` noise controls: the counterexample pool). Each folder is written in a
    staging folder beside it and renamed into place: an interrupted run leaves no half folder."""
    from PIL import Image
    from tqdm import tqdm

    names = list(CONCEPTS) if not names else list(dict.fromkeys(names))
    for n in names:
        if n != RANDOM and n not in CONCEPTS:
            draw(n, 0)   # raises the one-line error with the known names
    if count < 1 or random_count < 0:
        raise UserError("--count must be at least 1 and --random-count at least 0")
    if not 8 <= size <= 1024:
        raise UserError(f"--size must be from 8 to 1024 pixels, got {size}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    todo = [(n, count) for n in names if n != RANDOM] + ([(RANDOM, random_count)] if random_count else [])
    made = []
    bar = tqdm(total=sum(c for _, c in todo), desc="concepts", unit="img", disable=not progress, leave=False)
    for name, n in todo:
        stage = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=out))
        try:
            for i in range(n):
                Image.fromarray(draw(name, i, size, seed)).save(stage / f"{i:03d}.png")
                bar.update(1)
            os.chmod(stage, 0o777 & ~current_umask())   # mkdtemp makes it private
            final = out / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(stage, final)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        made.append(MadeConcept(name, final, n))
    bar.close()
    return made
