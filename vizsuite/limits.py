"""Explicit size limits, checked before anything is allocated (torch-free).

A size of 100000 px or a photo whose header claims 20000 x 20000 pixels would otherwise be found
out by the kernel's OOM killer. The CLI's --max-size / --max-megapixels raise the limits; they
travel in the environment so worker processes (--jobs N) apply the same ones.
"""

from __future__ import annotations

import math
import os

from .errors import UserError

MAX_SIZE_ENV = "VIZSUITE_MAX_SIZE"
MAX_MEGAPIXELS_ENV = "VIZSUITE_MAX_MEGAPIXELS"
DEFAULT_MAX_SIZE = 2048  # px: model input size and rendered image size
DEFAULT_MAX_MEGAPIXELS = 100.0  # photos read from disk (a 10000 x 10000 image is the largest allowed)


def max_size() -> int:
    try:
        return int(os.environ.get(MAX_SIZE_ENV, DEFAULT_MAX_SIZE))
    except ValueError:
        return DEFAULT_MAX_SIZE


def max_megapixels() -> float:
    try:
        return float(os.environ.get(MAX_MEGAPIXELS_ENV, DEFAULT_MAX_MEGAPIXELS))
    except ValueError:
        return DEFAULT_MAX_MEGAPIXELS


def set_limits(size: int | None = None, megapixels: float | None = None) -> None:
    """Raise (or lower) the limits for this process and the worker processes it starts."""
    if size is not None:
        if size < 16:
            raise UserError(f"--max-size must be at least 16, got {size}")
        os.environ[MAX_SIZE_ENV] = str(int(size))
    if megapixels is not None:
        if not megapixels > 0:
            raise UserError(f"--max-megapixels must be positive, got {megapixels}")
        os.environ[MAX_MEGAPIXELS_ENV] = repr(float(megapixels))


def check_size(value: int, flag: str) -> int:
    """UserError when a size in pixels is over the limit (--max-size raises it)."""
    limit = max_size()
    if value > limit:
        raise UserError(f"{flag} {value} is over the limit of {limit} px (pass --max-size {value} to allow it)")
    return value


def check_pixels(width: int, height: int, what: str) -> None:
    """UserError when an image's declared size is over the limit (--max-megapixels raises it)."""
    limit = max_megapixels()
    mp = width * height / 1e6
    if mp > limit:
        raise UserError(f"{what} is {width}x{height} ({mp:.0f} megapixels), over the limit of {limit:g} "
                        f"(pass --max-megapixels {math.ceil(mp)} to allow it)")
