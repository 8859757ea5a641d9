"""Fused CPU kernels for the memory-bound layers of a render step (docs/kernels.md).

3x3 max pooling and local response normalization, forward and backward, on channels-last
float32 / bfloat16 CPU tensors: one read and one write per tensor where PyTorch's kernels make
3-8 passes (int64 indices and a zero fill for the pool; an elementwise chain for each LRN term);
either can also apply the backward of the ReLU whose output it reads. And the ReLU rules'
backward read from the output, on channel slices too (1.1-1.8x torch's); space to depth with a
per-channel map (the input normalization), padding and a cast for a strided stem, from any input
layout; and bilinear grid_sample's input gradient (render's warp), one image per thread.
The C source (`cpu.c`) is compiled once per machine with the system C compiler into the user
cache (`$VIZSUITE_CACHE` or `$XDG_CACHE_HOME/vizsuite`, else `~/.cache/vizsuite`) and loaded
with ctypes; it builds in well under a second.

When there is no compiler, the build fails, the tensor does not qualify (`usable`) or
`VIZSUITE_KERNELS=0` is set, callers use their PyTorch path: same maths, float rounding only.
`status()` says which it is and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

import torch

__all__ = ["available", "lrn", "lrn_backward", "maxpool3x3", "maxpool3x3_backward", "relu_backward",
           "relu_rule_backward", "relu_rule_grad", "row_stride", "grid_sample_backward", "space_to_depth",
           "space_to_depth_backward", "status", "usable"]

_SOURCE = Path(__file__).with_name("cpu.c")
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC"]
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_reason: Optional[str] = None      # why the kernels are off, once tried
_tried = False


def _cache_dir() -> Path:
    if os.environ.get("VIZSUITE_CACHE"):
        return Path(os.environ["VIZSUITE_CACHE"]) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vizsuite" / "kernels"


def _cpu_flags() -> str:
    # -march=native code is only valid on the same CPU features: they are part of the cache key
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> Optional[str]:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or clang) on PATH")
    source = _SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS).encode(), version.encode(),
                                     _cpu_flags().encode()])).hexdigest()[:16]
    target = _cache_dir() / f"cpu-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([cc, *_FLAGS, "-o", tmp, str(_SOURCE), "-lm"],
                                  capture_output=True, text=True, timeout=120)
            if done.returncode:
                raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-500:]}")
            os.replace(tmp, target)           # atomic: a concurrent build writes the same bytes
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    # torch (imported above) has loaded its libgomp; the library's libgomp.so.1 binds to that
    # one, so the kernels' threads are torch's threads and never compete with them
    lib = ctypes.CDLL(str(target))
    i, l, f, p = ctypes.c_int, ctypes.c_long, ctypes.c_float, ctypes.c_void_p
    for s in _SUFFIX.values():
        getattr(lib, f"maxpool3_fwd_{s}").argtypes = [p, p, p] + [i] * 10
        getattr(lib, f"maxpool3_bwd_{s}").argtypes = [p, p, p, f, p] + [i] * 10
        getattr(lib, f"maxpool3_fwd_{s}").restype = getattr(lib, f"maxpool3_bwd_{s}").restype = None
        getattr(lib, f"lrn_fwd_{s}").argtypes = [p, p, l, i, i, f, f, f, i]
        getattr(lib, f"lrn_bwd_{s}").argtypes = [p, p, p, l, i, i, f, f, f, i, f, i]
        getattr(lib, f"relu_bwd_{s}").argtypes = [p, l, p, l, p, l, i, f, i]
    for si in _SUFFIX.values():
        for so in _SUFFIX.values():
            getattr(lib, f"s2d_fwd_{si}_{so}").argtypes = [p, l, l, l, l, p, p, p] + [i] * 10
            getattr(lib, f"s2d_bwd_{si}_{so}").argtypes = [p, p, l, l, l, l, p] + [i] * 10
            getattr(lib, f"s2d_fwd_{si}_{so}").restype = getattr(lib, f"s2d_bwd_{si}_{so}").restype = None
    lib.grid_sample_bwd_f32.argtypes = [p, l, l, l, l, p, p] + [i] * 7
    lib.grid_sample_bwd_f32.restype = None
    for s in _SUFFIX.values():
        for name in ("lrn_fwd", "lrn_bwd", "relu_bwd"):
            getattr(lib, f"{name}_{s}").restype = None
    return lib


def _load() -> Optional[ctypes.CDLL]:
    global _lib, _reason, _tried
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            if os.environ.get("VIZSUITE_KERNELS", "1") == "0":
                _reason = "VIZSUITE_KERNELS=0"
            else:
                try:
                    _lib = _build()
                except Exception as exc:      # any failure: the PyTorch path, said by status()
                    _reason = f"{type(exc).__name__}: {exc}"
            _tried = True
    return _lib


def available() -> bool:
    """True when the compiled kernels are loaded (building them on the first call)."""
    return _load() is not None


def status() -> str:
    """One line: whether the fused kernels are in use, and why not."""
    return "fused CPU kernels: on" if available() else f"fused CPU kernels: off ({_reason})"


def plain(x: torch.Tensor) -> bool:
    """A 4-D float32 / bfloat16 CPU tensor of any strides (no subclass), and the kernels built."""
    return (x.device.type == "cpu" and x.dtype in _SUFFIX and x.dim() == 4 and type(x) is torch.Tensor
            and available())


def usable(x: torch.Tensor) -> bool:
    """Whether `x` can go through these kernels: a 4-D channels-last float32 / bfloat16 CPU
    tensor (no grad-tracking subclass), and the kernels built."""
    return x.is_contiguous(memory_format=torch.channels_last) and plain(x)


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _kernel(name: str, dtype: torch.dtype):
    lib = _load()
    if lib is None:
        raise RuntimeError(status())
    return getattr(lib, f"{name}_{_SUFFIX[dtype]}")


def _pool_size(h: int, before: int, after: int, stride: int) -> int:
    return (h + before + after - 3) // stride + 1


def maxpool3x3(x: torch.Tensor, stride: int, pad: tuple[int, int, int, int],
               indices: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """3x3 max pool of channels-last `x` with -inf padding `pad` = (left, right, top, bottom)
    (F.pad's order; asymmetric allowed), first maximum winning as in torch. Returns the
    output and, with `indices`, each output's winning window position (uint8, 0-8)."""
    n, c, h, w = x.shape
    left, right, top, bottom = pad
    ho, wo = _pool_size(h, top, bottom, stride), _pool_size(w, left, right, stride)
    y = torch.empty((n, c, ho, wo), dtype=x.dtype, memory_format=torch.channels_last)
    idx = torch.empty((n, c, ho, wo), dtype=torch.uint8, memory_format=torch.channels_last) if indices else None
    _kernel("maxpool3_fwd", x.dtype)(
        _ptr(x), _ptr(y), _ptr(idx) if indices else None, n, h, w, c, stride, top, left, ho, wo,
        torch.get_num_threads())
    return y, idx


def maxpool3x3_backward(grad: torch.Tensor, idx: torch.Tensor, size: tuple[int, int], stride: int,
                        pad: tuple[int, int, int, int], y: Optional[torch.Tensor] = None,
                        leak: float = 0.0) -> torch.Tensor:
    """The input gradient of `maxpool3x3` from its output gradient and indices; `size` = (H, W).
    With the pool's output `y`: the input is a ReLU's output, and that ReLU rule's gradient
    (`leak` x grad where the input is <= 0) is applied in the same pass: the winner's value is
    the window's, so the rule reads the pool's output."""
    grad = grad.contiguous(memory_format=torch.channels_last)
    if y is not None and not y.is_contiguous(memory_format=torch.channels_last):
        raise ValueError("maxpool3x3_backward needs the pool's channels-last output")
    n, c, ho, wo = grad.shape
    h, w = size
    left, _, top, _ = pad
    gx = torch.empty((n, c, h, w), dtype=grad.dtype, memory_format=torch.channels_last)
    y = None if y is None else y.to(grad.dtype)      # (kept alive through the call)
    _kernel("maxpool3_bwd", grad.dtype)(
        _ptr(grad), _ptr(idx), None if y is None else _ptr(y), leak, _ptr(gx), n, h, w, c, stride, top,
        left, ho, wo, torch.get_num_threads())
    return gx


def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """torch.nn.functional.local_response_norm of channels-last `x`, in one pass."""
    y = torch.empty_like(x, memory_format=torch.channels_last)
    n, c, h, w = x.shape
    _kernel("lrn_fwd", x.dtype)(_ptr(x), _ptr(y), n * h * w, c, size, alpha, beta, k,
                                                 torch.get_num_threads())
    return y


def lrn_backward(x: torch.Tensor, grad: torch.Tensor, size: int, alpha: float, beta: float,
                 k: float, relu_leak: Optional[float] = None) -> torch.Tensor:
    """The input gradient of `lrn` at `x`, in one pass (recomputes the norm from `x`). With
    `relu_leak`: `x` is a ReLU's output and that rule's gradient (`relu_leak` x the gradient where
    x <= 0) is applied in the same pass."""
    grad = grad.to(x.dtype).contiguous(memory_format=torch.channels_last)
    gx = torch.empty_like(x, memory_format=torch.channels_last)
    n, c, h, w = x.shape
    _kernel("lrn_bwd", x.dtype)(_ptr(x), _ptr(grad), _ptr(gx), n * h * w, c, size, alpha, beta, k,
                                relu_leak is not None, relu_leak or 0.0, torch.get_num_threads())
    return gx


def row_stride(x: torch.Tensor) -> Optional[int]:
    """The pixel stride of a 4-D CPU float32 / bfloat16 tensor whose channels are contiguous and
    whose pixels are evenly spaced (channels-last, or a channel slice of one), else None."""
    if x.device.type != "cpu" or x.dtype not in _SUFFIX or x.dim() != 4 or type(x) is not torch.Tensor:
        return None
    n, c, h, w = x.shape
    r = x.stride(3) if w > 1 else (x.stride(2) if h > 1 else c)
    if (c > 1 and x.stride(1) != 1) or r < c:
        return None
    if (h > 1 and x.stride(2) != w * r) or (n > 1 and x.stride(0) != h * w * r):
        return None
    return r if available() else None


def relu_backward(grad: torch.Tensor, y: torch.Tensor, leak: float) -> torch.Tensor:
    """The gradient through a ReLU from its output `y`: `grad` where y > 0, else `leak` x grad
    (0: the exact ReLU gradient; torch-lucent's rule: 0.1). Both as `row_stride` allows;
    returns a channels-last tensor. Bitwise torch's leaky_relu_backward / threshold_backward."""
    gs, ys = row_stride(grad), row_stride(y)
    if gs is None or ys is None or grad.dtype != y.dtype or grad.shape != y.shape:
        raise ValueError("relu_backward needs channels-last rows of one dtype and shape")
    n, c, h, w = y.shape
    gx = torch.empty(y.shape, dtype=y.dtype, memory_format=torch.channels_last)
    _kernel("relu_bwd", y.dtype)(_ptr(grad), gs, _ptr(y), ys, _ptr(gx), n * h * w, c, leak, torch.get_num_threads())
    return gx


def _affine(values, c: int) -> Optional[torch.Tensor]:
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float32).reshape(-1).contiguous()
    if t.numel() != c:
        raise ValueError(f"{t.numel()} affine values for {c} channels")
    return t


class _RuleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, leak):
        ctx.save_for_backward(x)
        ctx.leak = leak
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return relu_rule_backward(grad, x, ctx.leak), None


def relu_rule_backward(grad: torch.Tensor, y: torch.Tensor, leak: float) -> torch.Tensor:
    """`relu_backward` where the tensors qualify (`row_stride`, one dtype), else torch's
    leaky_relu_backward / threshold_backward: the same values either way."""
    if row_stride(grad) is not None and row_stride(y) is not None and grad.dtype == y.dtype:
        return relu_backward(grad, y, leak)
    if leak:
        return torch.ops.aten.leaky_relu_backward(grad, y, leak, False)
    return torch.ops.aten.threshold_backward(grad, y, 0)


def relu_rule_grad(x: torch.Tensor, leak: float) -> torch.Tensor:
    """`x` (a ReLU's output) unchanged, whose gradient gets the ReLU rule's mask: the gradient
    where x > 0, else `leak` x it. For a layer that takes over its input ReLU's backward
    (`input_relu`) on a path without the fused kernels."""
    return _RuleGrad.apply(x, leak)


def space_to_depth(x: torch.Tensor, s: int, top: int, left: int, height: int, width: int,
                   scale=None, shift=None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """`x` (N, C, H, W, any strides), optionally mapped per channel to x * scale + shift, zero-padded
    by `top`/`left` and padded or cropped to `height` x `width` (multiples of s), rearranged s x s
    blocks into channels, (dy, dx, c) order: (N, s*s*C, height/s, width/s), channels-last, in
    `dtype` (default x's). The padding is zero after the map, as a network pads its input."""
    n, c, h, w = x.shape
    ho, wo = height // s, width // s
    dtype = dtype or x.dtype
    a, b = _affine(scale, c), _affine(shift, c)
    if (a is None) != (b is None):
        raise ValueError("space_to_depth needs both scale and shift, or neither")
    y = torch.empty((n, s * s * c, ho, wo), dtype=dtype, memory_format=torch.channels_last)
    _kernel(f"s2d_fwd_{_SUFFIX[x.dtype]}", dtype)(
        _ptr(x), x.stride(0), x.stride(1), x.stride(2), x.stride(3), a.data_ptr() if a is not None else None,
        b.data_ptr() if b is not None else None, _ptr(y), n, c, h, w, s, top, left, ho, wo, torch.get_num_threads())
    return y


def space_to_depth_backward(grad: torch.Tensor, shape, s: int, top: int, left: int,
                            memory_format=torch.contiguous_format, scale=None,
                            dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The gradient of `space_to_depth` at an input of `shape`, in `memory_format` and `dtype`
    (default grad's)."""
    grad = grad.contiguous(memory_format=torch.channels_last)
    n, c, h, w = shape
    dtype = dtype or grad.dtype
    a = _affine(scale, c)
    gx = torch.empty(shape, dtype=dtype, memory_format=memory_format)
    _kernel(f"s2d_bwd_{_SUFFIX[dtype]}", grad.dtype)(
        _ptr(grad), _ptr(gx), gx.stride(0), gx.stride(1), gx.stride(2), gx.stride(3),
        a.data_ptr() if a is not None else None, n, c, h, w, s, top, left, grad.shape[2], grad.shape[3],
        torch.get_num_threads())
    return gx


def grid_sample_backward(grad: torch.Tensor, grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The input gradient of `F.grid_sample(input, grid, "bilinear", "zeros", align_corners=True)`
    for a float32 input of spatial `size`, from the output gradient (any strides): NCHW."""
    grad = grad.float()
    grid = grid.float().contiguous()
    n, c, ho, wo = grad.shape
    h, w = size
    gx = torch.empty((n, c, h, w), dtype=torch.float32)
    _kernel("grid_sample_bwd", torch.float32)(_ptr(grad), grad.stride(0), grad.stride(1), grad.stride(2),
                                              grad.stride(3), _ptr(grid), _ptr(gx), n, c, h, w, ho, wo,
                                              torch.get_num_threads())
    return gx
