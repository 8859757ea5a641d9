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
from torch.overrides import TorchFunctionMode

from ..hooks import Hooks, pass_through

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


class _AverageForMax(TorchFunctionMode):
    """Within the mode (this thread only), max pooling averages instead."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.max_pool2d, torch.max_pool2d):
            return _avg_instead_of_max(*args, **kwargs)
        return func(*args, **kwargs)


def _avg_instead_of_max(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                        return_indices=False):
    if return_indices or dilation not in (1, (1, 1)):  # (the mode is off inside its own handler)
        return F.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    # -inf padding (TF 'SAME' pools pad with -inf so padding never wins the max) counts as 0
    x = torch.nan_to_num(input, neginf=0.0, posinf=0.0)
    stride = stride if stride not in (None, []) else kernel_size
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad=True)


@contextlib.contextmanager
def linearized(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, activation modules pass their input through and max pools average.

    Activation modules become identities through the hook manager (`hooks.pass_through`: the
    module runs on a copy of its input, so an in-place ReLU cannot overwrite what is passed on);
    max pooling, module or functional, averages inside a torch function mode, which is local to
    this thread: nothing global is patched. Activations written as bare functions inside a
    model's forward (F.relu) stay nonlinear.
    """
    edits = [pass_through(m) for m in model.modules() if is_nonlinearity(m)]
    with Hooks(model, (), edits, stop_early=False), _AverageForMax():
        yield model
