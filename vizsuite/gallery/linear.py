"""Linearize a network for a moment: nonlinearities become identity, max pools average pools.

Used for receptive fields (the gradient support of a linear map is the theoretical receptive
field, with no dead-ReLU holes) and for expanded weights (Olah et al., Circuits): through a
linearized network the map between two layers is affine, so its derivative *is* the weight.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_NONLINEAR = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
              nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign,
              nn.Tanhshrink, nn.LogSigmoid, nn.Threshold)
# activation classes of other libraries (timm's Swish, HardSwishMe, GELUTanh...) by name
_NAME_HINTS = ("relu", "swish", "silu", "gelu", "mish", "sigmoid", "tanh", "softplus", "elu")


def is_nonlinearity(module: nn.Module) -> bool:
    """An elementwise activation module (by type, or a child-less module named like one)."""
    if isinstance(module, _NONLINEAR):
        return True
    name = type(module).__name__.lower()
    return not any(True for _ in module.children()) and any(h in name for h in _NAME_HINTS)


def _identity(x, *args, **kwargs):
    return x


_ORIGINAL_MAX_POOL2D = F.max_pool2d


def _avg_instead_of_max(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        return_indices=False):
    if return_indices or dilation not in (1, (1, 1)):
        return _ORIGINAL_MAX_POOL2D(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    # -inf padding (TF 'SAME' pools pad with -inf so padding never wins the max) counts as 0
    x = torch.nan_to_num(input, neginf=0.0, posinf=0.0)
    return F.avg_pool2d(x, kernel_size, stride if stride is not None else kernel_size, padding, ceil_mode,
                        count_include_pad=True)


@contextlib.contextmanager
def linearized(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, activation modules pass their input through and max pools average.

    Activation modules get an instance-level `forward` (restored on exit) rather than a hook,
    because an in-place ReLU has already overwritten its input by the time a hook runs.
    Max pooling is swapped at `F.max_pool2d`, which module and functional calls both use.
    Activations written as bare functions inside a model's forward (F.relu) stay nonlinear.
    Not thread-safe (the max-pool swap is process-wide for the duration of the block).
    """
    patched = [m for m in model.modules() if is_nonlinearity(m)]
    for m in patched:
        m.forward = _identity
    F.max_pool2d = _avg_instead_of_max
    try:
        yield model
    finally:
        F.max_pool2d = _ORIGINAL_MAX_POOL2D
        for m in patched:
            if "forward" in vars(m):
                del m.forward
