"""GoogLeNet as Lucid knows it: the `inception5h` graph ("InceptionV1"), in PyTorch.

Parameter names and shapes match torch-lucent's `lucent.modelzoo.inceptionv1.InceptionV1`, so
the widely shared `inception5h.pth` state dict loads with `strict=True`. Every tensor Lucid
names (`conv2d0`, `maxpool1`, `mixed4a_3x3_bottleneck`, `mixed4a`, ...) is the output of a
submodule of that name, so forward hooks and `LAYER:INDEX` units see Lucid's activations.

`forward` takes input that is already preprocessed the Lucid way (RGB in [0, 1] mapped to
`x * 255 - 117`, i.e. mean 117/255, std 1/255) and returns the 1008 pre-softmax logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .. import kernels
from .lrn import LocalResponseNorm

DEFAULT_LAYERS = ["conv2d2", "mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d",
                  "mixed4e", "mixed5a", "mixed5b"]
INPUT_SIZE = 224
NUM_CLASSES = 1008

# name: (1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool reduce) output channels.
# inception5h differs from the GoogLeNet paper in mixed4a (204/48 instead of 208/48).
_BLOCKS = {
    "mixed3a": (64, 96, 128, 16, 32, 32),
    "mixed3b": (128, 128, 192, 32, 96, 64),
    "mixed4a": (192, 96, 204, 16, 48, 64),
    "mixed4b": (160, 112, 224, 24, 64, 64),
    "mixed4c": (128, 128, 256, 24, 64, 64),
    "mixed4d": (112, 144, 288, 32, 64, 64),
    "mixed4e": (256, 160, 320, 32, 128, 128),
    "mixed5a": (256, 160, 320, 48, 128, 128),
    "mixed5b": (384, 192, 384, 48, 128, 128),
}
# Stride-2 max pools that sit in front of a block.
_POOL_BEFORE = {"mixed4a": "maxpool4", "mixed5a": "maxpool10"}


class Concat(nn.Module):
    """Channel concatenation as a module, so hooks and LRP canonizers can find the join."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        return torch.cat(list(tensors), self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class _FusedMaxPool(torch.autograd.Function):
    """3x3 max pool through `vizsuite.kernels`: uint8 window indices instead of int64, and a
    backward that writes each input gradient once (no zero fill)."""

    @staticmethod
    def forward(ctx, x, stride, pad, relu_leak=None):
        y, idx = kernels.maxpool3x3(x, stride, pad)
        ctx.save_for_backward(idx, y if relu_leak is not None else None)
        ctx.args = (tuple(x.shape[2:]), stride, pad)
        ctx.leak = relu_leak
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        idx, y = ctx.saved_tensors
        return kernels.maxpool3x3_backward(grad, idx, *ctx.args, y=y, leak=ctx.leak or 0.0), None, None, None


class PaddedMaxPool2d(nn.MaxPool2d):
    """3x3 max pool after TF-style padding with -inf (padding never wins the max).

    TensorFlow's SAME padding for the stride-2 pools puts the extra row/column on the
    right/bottom only, which PyTorch's symmetric `padding` cannot express.
    """

    def __init__(self, stride: int, pad: tuple[int, int, int, int]):
        super().__init__(kernel_size=3, stride=stride)
        self.pad = tuple(pad)
        #: None, or the leak of the ReLU rule whose output this pool reads and whose backward it
        #: applies (render's copy: `optvis.convs.fuse_conv_relus`; the ReLU then skips its own)
        self.input_relu = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the pool's own padding is -inf too and needs no padded copy (a fill and a copy per
        # pool, forward and backward): symmetric pads are its `padding`; stride 2 with one
        # extra row/column at the bottom/right is ceil_mode (the last window overhangs)
        left, right, top, bottom = self.pad
        if kernels.usable(x):
            if torch.is_grad_enabled() and x.requires_grad:
                return _FusedMaxPool.apply(x, self.stride, self.pad, self.input_relu)
            return kernels.maxpool3x3(x, self.stride, self.pad, indices=False)[0]
        if self.input_relu is not None and x.requires_grad:
            x = kernels.relu_rule_grad(x, self.input_relu)
        if left == right == top == bottom:
            return F.max_pool2d(x, 3, self.stride, padding=left)
        if (left, right, top, bottom) == (0, 1, 0, 1) and self.stride == 2:
            return F.max_pool2d(x, 3, 2, ceil_mode=True)
        return super().forward(F.pad(x, self.pad, value=float("-inf")))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"


class PaddedConv2d(nn.Conv2d):
    """A Conv2d after a fixed zero pad `pad` = (left, right, top, bottom): TensorFlow's SAME
    padding of a strided conv, which puts the odd row/column after the image and which
    PyTorch's symmetric `padding` cannot express. A module, not an `F.pad` in the network's
    forward, so that render's copy can fold the pad into the stem's rearrangement."""

    def __init__(self, *args, pad: tuple[int, int, int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.pad}"


def _lrn() -> LocalResponseNorm:
    # The converted graph's constants, as lucent uses them (depth radius 4 -> 9 channels).
    # Note torch averages the squares over the window where TF sums them; keeping lucent's
    # numbers keeps our activations identical to lucent's for inception5h.pth.
    return LocalResponseNorm(size=9, alpha=9.99999974738e-05, beta=0.5, k=1.0)


class InceptionV1(nn.Module):
    """Lucid's InceptionV1 (inception5h). Modules are registered in forward order so
    `named_modules()` lists layers the way the network runs; the parameterised modules come
    in the same order as lucent's, so even the state-dict key order matches."""

    def __init__(self):
        super().__init__()
        # Stem: TF SAME padding of a 7x7 stride-2 conv at 224 px, 2 before and 3 after (as lucent)
        self.conv2d0_pre_relu_conv = PaddedConv2d(3, 64, 7, stride=2, pad=(2, 3, 2, 3))
        self.conv2d0 = nn.ReLU()
        self.maxpool0 = PaddedMaxPool2d(2, (0, 1, 0, 1))
        self.localresponsenorm0 = _lrn()
        self.conv2d1_pre_relu_conv = nn.Conv2d(64, 64, 1)
        self.conv2d1 = nn.ReLU()
        self.conv2d2_pre_relu_conv = nn.Conv2d(64, 192, 3, padding=1)
        self.conv2d2 = nn.ReLU()
        self.localresponsenorm1 = _lrn()
        self.maxpool1 = PaddedMaxPool2d(2, (0, 1, 0, 1))

        c_in = 192
        for name, (c1, c3r, c3, c5r, c5, cp) in _BLOCKS.items():
            if name in _POOL_BEFORE:
                setattr(self, _POOL_BEFORE[name], PaddedMaxPool2d(2, (0, 1, 0, 1)))
            # (branch, in, out, kernel); this order fixes the state-dict order (lucent's).
            convs = [("1x1", c_in, c1, 1), ("3x3_bottleneck", c_in, c3r, 1),
                     ("5x5_bottleneck", c_in, c5r, 1), ("pool_reduce", c_in, cp, 1),
                     ("3x3", c3r, c3, 3), ("5x5", c5r, c5, 5)]
            for branch, cin, cout, k in convs:
                if branch == "pool_reduce":
                    setattr(self, f"{name}_pool", PaddedMaxPool2d(1, (1, 1, 1, 1)))
                setattr(self, f"{name}_{branch}_pre_relu_conv", nn.Conv2d(cin, cout, k, padding=k // 2))
                setattr(self, f"{name}_{branch}", nn.ReLU())
            setattr(self, name, Concat(dim=1))
            c_in = c1 + c3 + c5 + cp

        # VALID 7x7 average pool: 1x1 output at 224 px, as in the graph.
        self.avgpool0 = nn.AvgPool2d(7, stride=1, count_include_pad=False)
        self.softmax2_pre_activation_matmul = nn.Linear(c_in, NUM_CLASSES)

    def _branch(self, block: str, branch: str, x: torch.Tensor) -> torch.Tensor:
        conv = getattr(self, f"{block}_{branch}_pre_relu_conv")
        return getattr(self, f"{block}_{branch}")(conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2d0(self.conv2d0_pre_relu_conv(x))
        x = self.localresponsenorm0(self.maxpool0(x))
        x = self.conv2d1(self.conv2d1_pre_relu_conv(x))
        x = self.conv2d2(self.conv2d2_pre_relu_conv(x))
        x = self.maxpool1(self.localresponsenorm1(x))
        for name in _BLOCKS:
            if name in _POOL_BEFORE:
                x = getattr(self, _POOL_BEFORE[name])(x)
            b1 = self._branch(name, "1x1", x)
            b3 = self._branch(name, "3x3", self._branch(name, "3x3_bottleneck", x))
            b5 = self._branch(name, "5x5", self._branch(name, "5x5_bottleneck", x))
            bp = self._branch(name, "pool_reduce", getattr(self, f"{name}_pool")(x))
            x = getattr(self, name)([b1, b3, b5, bp])
        # At 224 px the pool is 1x1 and this is a plain flatten (lucent's reshape(-1, 1024)).
        # Larger inputs give one row per 7x7 window, as the NHWC graph's reshape did; lucent's
        # NCHW reshape would mix channels and positions there.
        x = self.avgpool0(x)
        x = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        return self.softmax2_pre_activation_matmul(x)
