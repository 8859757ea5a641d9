"""Convolution rewrites for render's private model copy (docs/optvis.md, "Speed").

`UnshuffledConv2d`: a strided convolution over few input channels (InceptionV1's 7x7 stride-2
stem over RGB) as a stride-1 convolution over the space-to-depth rearranged input: the same
function, whose input gradient oneDNN computes 2.7-3.7x faster (measured: 8 x 3 x 229 x 229 ->
64 x 112 x 112, bf16 21.4 -> 5.7 ms, fp32 58.9 -> 21.4 ms), because its backward-data kernels
are slow for 3 output channels and fine for 12.

`ConvReLU`: a conv and the ReLU that alone reads its output, as one oneDNN primitive.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from ..zoo.inceptionv1 import PaddedConv2d, PaddedMaxPool2d
from ..zoo.lrn import LocalResponseNorm
from ..zoo.spec import VisionModel
from .graphs import named_ids, trace_children, unhooked
from .prune import mark_branches
from .relu import LEAK, RedirectedReLU, redirect_relus, replace_modules


class _SpaceToDepth(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, s, top, left, height, width, scale, shift, dtype):
        ctx.args = (tuple(x.shape), s, top, left,
                    torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                    and not x.is_contiguous() else torch.contiguous_format, scale, x.dtype)
        return kernels.space_to_depth(x, s, top, left, height, width, scale, shift, dtype)

    @staticmethod
    def backward(ctx, grad):
        shape, s, top, left, fmt, scale, dtype = ctx.args
        gx = kernels.space_to_depth_backward(grad, shape, s, top, left, fmt, scale, dtype)
        return (gx,) + (None,) * 8


class UnshuffledConv2d(nn.Module):
    """`conv` (stride s in both directions, groups 1, dilation 1, zero padding, including a
    `PaddedConv2d`'s asymmetric pad) computed as a stride-1 convolution of the padded input
    rearranged space to depth (s x s blocks into channels) with the kernel zero-padded to a
    multiple of s and rearranged the same way. The original stays at `.conv` (its parameters);
    the rearranged kernel is made once, from the copy's frozen weights.

    The rearranged input is in the kernel's dtype whatever the input's (the cast is part of the
    same pass), and `absorb_normalization` may give it the network's input normalization too:
    one pass from the [0, 1] image to what the stem convolves."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        s = conv.stride[0]
        kh, kw = conv.kernel_size
        ph, pw = conv.padding
        left, right, top, bottom = conv.pad if isinstance(conv, PaddedConv2d) else (0, 0, 0, 0)
        self.pads = (left + pw, right + pw, top + ph, bottom + ph)
        self.kernel = (-(-kh // s) * s, -(-kw // s) * s)
        self.affine: Optional[tuple[torch.Tensor, torch.Tensor]] = None     # (scale, shift)
        with torch.no_grad():
            w = F.pad(conv.weight, (0, self.kernel[1] - kw, 0, self.kernel[0] - kh))
            o, c, kh2, kw2 = w.shape
            # rearranged channel (dy * s + dx) * C + c holds tap (i * s + dy, j * s + dx) of c
            w = w.reshape(o, c, kh2 // s, s, kw2 // s, s).permute(0, 3, 5, 1, 2, 4)
            self.register_buffer("weight", w.reshape(o, s * s * c, kh2 // s, kw2 // s).contiguous(
                memory_format=torch.channels_last), persistent=False)

    @staticmethod
    def applies(conv: nn.Module) -> bool:
        """A frozen, strided (equal strides), ungrouped, undilated, zero-padded Conv2d (or
        `PaddedConv2d`) whose rearranged input has at most 16 channels (in_channels x
        stride^2): a network's stem."""
        return (type(conv) in (nn.Conv2d, PaddedConv2d) and conv.groups == 1 and conv.dilation == (1, 1)
                and conv.stride[0] == conv.stride[1] > 1 and conv.padding_mode == "zeros"
                and not isinstance(conv.padding, str) and conv.in_channels * conv.stride[0] ** 2 <= 16
                and not conv.weight.requires_grad)

    def set_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Map the input to input * scale + shift per channel first (the zero padding comes
        after the map, as it did when the network padded its normalized input)."""
        self.affine = (scale.to(torch.float64).reshape(-1), shift.to(torch.float64).reshape(-1))

    def unshuffle(self, x: torch.Tensor) -> torch.Tensor:
        """The mapped, padded (or cropped: rows no window reads), rearranged input, in the
        kernel's dtype."""
        c = self.conv
        s = c.stride[0]
        left, right, top, bottom = self.pads
        h, w = x.shape[-2:]
        ho = (h + top + bottom - c.kernel_size[0]) // s + 1
        wo = (w + left + right - c.kernel_size[1]) // s + 1
        hs, ws = (ho - 1) * s + self.kernel[0], (wo - 1) * s + self.kernel[1]
        scale, shift = self.affine or (None, None)
        dtype = self.weight.dtype
        if kernels.plain(x) and dtype in (torch.float32, torch.bfloat16):
            # map, pad, crop, cast and rearrange in one pass, from any layout
            return _SpaceToDepth.apply(x, s, top, left, hs, ws, scale, shift, dtype)
        if scale is not None:
            x = torch.addcmul(shift.view(1, -1, 1, 1).to(x.device, x.dtype), x,
                              scale.view(1, -1, 1, 1).to(x.device, x.dtype))
        x = F.pad(x, (left, ws - w - left, top, hs - h - top)).to(dtype)
        # space to depth in (dy, dx, channel) order: in channels-last memory each (dx, channel)
        # run is contiguous, so this is one copy of 2C-element blocks (F.pixel_unshuffle's
        # (channel, dy, dx) order copied 3-element runs: 1.8x slower forward + backward)
        n, c = x.shape[:2]
        nhwc = x.permute(0, 2, 3, 1).reshape(n, hs // s, s, ws // s, s * c).permute(0, 1, 3, 2, 4)
        return nhwc.reshape(n, hs // s, ws // s, s * s * c).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unshuffle(x)
        b = self.conv.bias
        return F.conv2d(u, self.weight, None if b is None else b.to(u.dtype))

    def extra_repr(self) -> str:
        return (f"stride {self.conv.stride[0]} as unshuffled stride 1, kernel {self.kernel}"
                + (", input normalized here" if self.affine else ""))


def unshuffle_strided_convs(net: nn.Module) -> int:
    """In place (call it on a copy): each Conv2d `UnshuffledConv2d.applies` to becomes one.
    Hooks on its name still read the same output. Returns how many."""
    return replace_modules(net, lambda child: UnshuffledConv2d(child)
                           if UnshuffledConv2d.applies(child) and unhooked(child) else None)


# ---------------------------------------------------------------- conv + ReLU fusion

class _ConvReLUFunction(torch.autograd.Function):
    """conv2d and ReLU in one oneDNN primitive (the ReLU as the convolution's post-op: no pass
    of its own); backward: the rule's ReLU gradient read from the output (y > 0 exactly where
    the input was > 0), then the convolution's input gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, leak):
        y = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation, groups,
                                                    "relu", [], "")
        ctx.save_for_backward(x, weight, y)
        ctx.conv = (None if bias is None else [bias.shape[0]], stride, padding, dilation, groups)
        ctx.leak = leak
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        if ctx.leak is None:      # the layer reading the output applied the rule already
            g = grad
        else:                     # one kernel pass where it can, also over channel slices
            g = kernels.relu_rule_backward(grad, y, ctx.leak)
        bias_sizes, stride, padding, dilation, groups = ctx.conv
        gx = torch.ops.aten.convolution_backward(g, x, weight, bias_sizes, stride, padding, dilation, False,
                                                 [0, 0], groups, [True, False, False])[0]
        return gx, None, None, None, None, None, None, None


class ConvReLU(nn.Module):
    """A Conv2d (or UnshuffledConv2d) followed by its ReLU (rule "exact" or "leaky"), run as one
    fused primitive on the CPU; the conv's parameters stay where they were (`.conv`). Anything
    the fusion cannot take (a grad-requiring weight, another device or dtype) runs the two
    modules as before."""

    def __init__(self, conv: nn.Conv2d, relu: nn.Module):
        super().__init__()
        self.conv, self.relu = conv, relu
        self.leak = LEAK if getattr(relu, "rule", "exact") == "leaky" else 0.0
        #: the one layer reading the output applies the ReLU rule's backward (its `input_relu`)
        self.rule_after = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        unshuffled = isinstance(c, UnshuffledConv2d)
        inner = c.conv if unshuffled else c
        w, b = c.weight, inner.bias       # an UnshuffledConv2d's weight: its rearranged kernel
        if (x.device.type == "cpu" and torch.is_grad_enabled() and x.requires_grad and x.dim() == 4
                and w.dtype in (torch.float32, torch.bfloat16)     # oneDNN's (float64: torch's path)
                and not inner.weight.requires_grad and (b is None or not b.requires_grad)):
            leak = None if self.rule_after else self.leak
            if unshuffled:                # its rearranged input is in the kernel's dtype
                return _ConvReLUFunction.apply(c.unshuffle(x), w, b, [1, 1], [0, 0], [1, 1], 1, leak)
            if x.dtype == w.dtype:
                return _ConvReLUFunction.apply(x, w, b, list(c.stride), list(c.padding), list(c.dilation),
                                               c.groups, leak)
        if self.rule_after:               # the ReLU's value with an identity gradient
            z = self.conv(x)
            return z + (F.relu(z) - z).detach()
        return self.relu(self.conv(x))


class Applied(nn.Module):
    """Stands where a ReLU was whose work moved into the conv before it (`ConvReLU`): passes its
    input through, so forward hooks on the ReLU's name still read the activation."""

    def __init__(self, relu: nn.Module):
        super().__init__()
        self.fused = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _fusable_conv(m: nn.Module) -> bool:
    return ((isinstance(m, UnshuffledConv2d) or (type(m) is nn.Conv2d and m.padding_mode == "zeros"
                                                 and not isinstance(m.padding, str)))
            and unhooked(m) and torch.backends.mkldnn.is_available())


def _fusable_relu(m: nn.Module) -> bool:
    # rules whose gradient the output determines exactly: ReLU's "exact" and "leaky" at 0
    return unhooked(m) and (type(m) is nn.ReLU or (type(m) is RedirectedReLU and m.lo == 0 and m.hi is None
                                                    and m.rule == "leaky"))


def _pairs(module: nn.Module, skip: set):
    """(conv name, relu name) among `module`'s direct children where the traced forward feeds the
    conv's output to that ReLU and nowhere else; then the same inside each child."""
    found = []
    traced = trace_children(module)
    if traced is not None:
        graph, calls = traced
        children = dict(module.named_children())
        for node in graph.nodes:
            if node.op != "call_module" or node.target not in children:
                continue
            conv = children[node.target]
            users = list(node.users)
            # a module called twice (shared weights) would be fused for one call and not the other
            if (not _fusable_conv(conv) or id(conv) in skip or len(users) != 1 or calls[node.target] != 1
                    or users[0].op != "call_module" or users[0].target not in children
                    or calls.get(users[0].target) != 1 or users[0].args != (node,) or users[0].kwargs):
                continue
            relu = children[users[0].target]
            if _fusable_relu(relu) and id(relu) not in skip:
                found.append((node.target, users[0].target, _rule_taker(users[0], children, calls)))
    for name, child in module.named_children():
        if next(child.children(), None) is not None:
            found += [(f"{name}.{a}", f"{name}.{b}", c and f"{name}.{c}") for a, b, c in _pairs(child, skip)]
    return found


def _rule_taker(relu_node, children: dict, calls: dict) -> Optional[str]:
    """The child that alone reads the ReLU's output, when it is a layer that can apply the ReLU
    rule's backward in its own (`input_relu`: InceptionV1's max pools and LRNs), else None."""
    users = list(relu_node.users)
    if len(users) != 1 or users[0].op != "call_module" or users[0].target not in children:
        return None
    m = children[users[0].target]
    if (type(m) not in (PaddedMaxPool2d, LocalResponseNorm) or m.input_relu is not None or not unhooked(m)
            or calls.get(users[0].target) != 1 or users[0].args != (relu_node,) or users[0].kwargs):
        return None
    return users[0].target


def fuse_conv_relus(net: nn.Module, keep=()) -> int:
    """In place (call it on a copy): every Conv2d whose output only feeds a ReLU (nn.ReLU or the
    "leaky" RedirectedReLU) becomes a `ConvReLU` and the ReLU an `Applied` pass-through, found by
    tracing each module's forward with torch.fx. Convolutions named in `keep` (or hooked) are
    left alone, because their hooks must read the pre-activation. Where the ReLU's output goes
    to one max pool or LRN only (InceptionV1's conv2d0 -> maxpool0, conv2d2 -> LRN), that layer
    applies the ReLU rule's backward in its own backward pass (`input_relu`) and the fused conv
    skips its mask pass. Returns the number fused."""
    skip = named_ids(net, keep)
    modules = dict(net.named_modules())
    count = 0
    for conv_name, relu_name, taker in _pairs(net, skip):
        conv, relu = modules[conv_name], modules[relu_name]
        fused = ConvReLU(conv, relu)
        if taker is not None:     # a pool or LRN masks the gradient in its own backward pass
            modules[taker].input_relu = fused.leak
            fused.rule_after = True
        _set(net, conv_name, fused)
        _set(net, relu_name, Applied(relu))
        count += 1
    return count


def _set(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _first_layer(module: nn.Module) -> Optional[nn.Module]:
    """The module that alone reads `module`'s input, descending into containers (found by
    tracing each forward with torch.fx), or None."""
    traced = trace_children(module)
    if traced is None:
        return None
    inputs = [n for n in traced[0].nodes if n.op == "placeholder"]
    if len(inputs) != 1 or len(inputs[0].users) != 1:
        return None
    (user,) = inputs[0].users
    if user.op != "call_module" or user.args != (inputs[0],) or user.kwargs:
        return None
    child = module.get_submodule(user.target)
    if isinstance(child, UnshuffledConv2d) or next(child.children(), None) is None:
        return child
    return _first_layer(child)


def absorb_normalization(model: nn.Module) -> bool:
    """In place (render's copy): a `VisionModel` whose network hands its input straight to an
    `UnshuffledConv2d` stem gives that stem its input normalization (and with it the cast to the
    network's dtype): `model.raw_input` becomes True and the [0, 1] image goes from the warp to
    the stem's convolution in one pass (forward and backward) instead of four (layout, cast,
    normalization, pad). Returns whether it did."""
    if not isinstance(model, VisionModel) or model.raw_input:
        return False
    stem = _first_layer(model.net)
    if not isinstance(stem, UnshuffledConv2d) or not unhooked(stem) or stem.affine is not None:
        return False
    if stem.conv.in_channels != len(model.spec.mean):
        return False
    stem.set_affine(*model.normalization())
    model.raw_input = True
    return True


def prepare_render_copy(net: nn.Module, rule: str = "redirect", keep=()) -> int:
    """Render's treatment of its private copy, in place: `redirect_relus(net, rule)`, strided
    convolutions over few channels as `UnshuffledConv2d` (which, first in the network, also
    normalize its input: `absorb_normalization`), then `fuse_conv_relus(net, keep)`, and the
    branches of channel joins made skippable (`prune.mark_branches`: a render whose objective
    reads some channels of a join skips the branches holding none). Returns the number of ReLUs
    replaced by the rule."""
    count = redirect_relus(net, rule)
    unshuffle_strided_convs(net)
    absorb_normalization(net)
    fuse_conv_relus(net, keep)
    mark_branches(net, keep)
    return count
