"""Keep freed memory for reuse during a hot loop (glibc malloc tuning, scoped to a `with` block).

An optimization step allocates and frees the same few dozen activation tensors every step
(~14 MB at batch 1 for EfficientNet-Lite0 up to blocks.4). glibc hands the freed top of the heap
back to the kernel as soon as it exceeds its trim threshold, so the next step page-faults all
of it in again: 2,400-4,400 minor faults per render step, measured, and 12-30 % of the step
time on this VM (a batch-1 step: 29-36 ms -> 25.5-26 ms). Inside `keep_freed_memory()` freed
memory stays with the process; on exit the heap is trimmed again.

glibc only (Linux); elsewhere (macOS, musl, Windows) this is a no-op. Setting any of these
parameters turns off glibc's dynamic threshold for the rest of the process, so on exit they are
left at the values that dynamic mode converges to (mmap threshold 32 MiB, trim threshold
twice that) rather than at the 128 KiB start values.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 << 20          # glibc's upper limit for the dynamic mmap threshold (64-bit)
_KEEP = (1 << 31) - 1         # the trim threshold is an int: "never trim" in practice

_lock = threading.Lock()
_depth = 0


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.malloc_trim.argtypes = [ctypes.c_size_t]
        lib.gnu_get_libc_version  # noqa: B018 - glibc only
        return lib
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


@contextlib.contextmanager
def keep_freed_memory():
    """Within the block, glibc keeps freed heap memory instead of returning it (nested: outermost wins)."""
    global _depth
    if _LIBC is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _KEEP)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _LIBC.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_MAX)
                _LIBC.malloc_trim(0)
