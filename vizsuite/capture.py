"""Activation capture with hooks that never outlive the call, and truncated forwards.

    with Capture(model, ["blocks.4", "blocks.5"]) as cap:
        acts = cap(images)          # runs only as far as blocks.5

Hooks are registered on enter and removed on exit (also after an exception). With
`stop_early=True` the forward is cut right after the last requested layer has produced its
output, so no compute is spent on later layers.
"""

from __future__ import annotations

import copy
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from .errors import UserError, close_matches
from .zoo.spec import VisionModel


class _StopForward(Exception):
    """Raised inside a hook to end the forward pass early; caught by Capture.__call__."""


def _resolve(model: nn.Module, name: str) -> nn.Module:
    if isinstance(model, VisionModel):
        return model.layer(name)
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise UserError(f"unknown layer {name!r}{close_matches(name, [n for n in modules if n])}")
    return modules[name]


class Capture:
    """Context manager capturing the outputs of named layers; call it to run a forward."""

    def __init__(self, model: nn.Module, layers: Iterable[str], *, stop_early: bool = True,
                 detach: bool = False):
        self.model = model
        self.layers = list(dict.fromkeys(layers))
        self.stop_early = stop_early
        self.detach = detach
        self.activations: dict[str, torch.Tensor] = {}
        self.output: Optional[torch.Tensor] = None
        self._handles: list = []
        self._modules = {name: _resolve(model, name) for name in self.layers}

    def __enter__(self) -> "Capture":
        try:
            for name, module in self._modules.items():
                if isinstance(module, torch.jit.ScriptModule):
                    raise UserError(f"layer {name!r} is part of a TorchScript model, which cannot be hooked; "
                                    f"load the model from Python code to read its layers")
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this capture registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if name in self.activations:  # a module called twice: keep the first call
                return
            self.activations[name] = output.detach() if self.detach else output
            if self.stop_early and len(self.activations) == len(self.layers):
                raise _StopForward
        return hook

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the model on `x`; return {layer: activation}. Sets `.output` if it ran to the end."""
        if not self._handles:
            raise RuntimeError("Capture must be used inside its `with` block")
        self.activations = {}
        self.output = None
        try:
            self.output = self.model(x)
        except _StopForward:
            pass
        missing = [n for n in self.layers if n not in self.activations]
        if missing:
            raise UserError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
        return dict(self.activations)


def activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, grad: bool = False,
                stop_early: bool = True) -> dict[str, torch.Tensor]:
    """One-shot capture: {layer: activation} for `x`, computing no later layers than needed."""
    with Capture(model, layers, stop_early=stop_early, detach=not grad) as cap:
        with torch.set_grad_enabled(grad):
            return cap(x)


# ---------------------------------------------------------------- inference copies

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def leaf_modules(module: nn.Module):
    """Leaves in registration order, but a batch norm counts as a leaf even with children.

    timm's BatchNormAct2d holds `drop` and `act` as children; descending into it (as zennit's
    SequentialMergeBatchNorm does) would never see a conv followed by a batch norm there.
    """
    children = list(module.children())
    if not children or isinstance(module, _BATCH_NORMS):
        yield module
        return
    for child in children:
        yield from leaf_modules(child)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, _CONVS) and isinstance(bn, _BATCH_NORMS)
            and bn.running_mean is not None and bn.running_var is not None
            and conv.out_channels == bn.num_features)


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.Module) -> None:
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    w = conv.weight
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    conv.weight = nn.Parameter((w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype),
                               requires_grad=False)
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def _outputs(model: nn.Module, x: torch.Tensor, layers: Sequence[str], output: bool) -> list[torch.Tensor]:
    if not layers:
        out = model(x)
        return [out] if isinstance(out, torch.Tensor) else []
    with Capture(model, layers, stop_early=not output, detach=True) as cap:
        acts = cap(x)
    return [acts[n] for n in layers] + ([cap.output] if isinstance(cap.output, torch.Tensor) else [])


@torch.no_grad()
def inference_copy(model: nn.Module, example: torch.Tensor, keep: Sequence[str] = (), output: bool = True,
                   channels_last: bool = True, fold_batchnorm: bool = True) -> nn.Module:
    """A frozen, faster copy of `model` for loops that need gradients of the input only.

    The copy is in eval mode with weights that need no gradient; every batch norm (with running
    statistics) that directly follows a convolution is folded into that convolution and leaves
    the forward pass (a plain batch norm becomes Identity, timm's BatchNormAct2d keeps its
    activation), and 4-D weights are stored channels_last. Convolutions named in `keep`, whose
    own outputs are read, keep their batch norm. The fold is checked on `example`: the `keep`
    layers' outputs, and the model output unless `output=False` (then the check stops at the
    last `keep` layer), must match the original's, else (a convolution output that is also used
    elsewhere) the copy is returned unfolded. `model` itself is never changed; a model that
    cannot be copied (some TorchScript modules) is returned as it is.
    """
    try:
        net = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - copying is an optimization, never a requirement
        return model
    net.eval().requires_grad_(False)
    keep = list(dict.fromkeys(keep))
    output = output or not keep
    keep_ids = {id(_resolve(net, name)) for name in keep}
    try:
        folded = fold_batchnorm and _fold_all(net, keep_ids)
    except Exception:  # noqa: BLE001 - e.g. a parametrized weight that refuses assignment
        return inference_copy(model, example, keep, output, channels_last, fold_batchnorm=False)
    if folded:
        modes = [(m, m.training) for m in model.modules()]
        try:
            model.eval()  # the reference needs running statistics; the caller's flags come back below
            expected = _outputs(model, example, keep, output)
        finally:
            for m, training in modes:
                m.training = training
        if not all(_close(a, b) for a, b in zip(_outputs(net, example, keep, output), expected)):
            return inference_copy(model, example, keep, output, channels_last, fold_batchnorm=False)
    if channels_last:
        for p in net.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return net


def _fold_all(net: nn.Module, keep_ids: set) -> int:
    parents = {id(child): (parent, name) for parent in net.modules() for name, child in parent.named_children()}
    pairs, last = [], None
    for leaf in leaf_modules(net):
        if last is not None and id(last) not in keep_ids and _foldable(last, leaf):
            pairs.append((last, leaf))
        last = leaf
    for conv, bn in pairs:
        _fold(conv, bn)
        children = OrderedDict(bn.named_children())
        # what the batch norm module did after normalizing (timm: drop, act) stays in the forward
        parent, name = parents[id(bn)]
        setattr(parent, name, nn.Sequential(children) if children else nn.Identity())
    return len(pairs)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = b.abs().max().clamp_min(1e-12)
    return bool(((a.float() - b.float()).abs().max() / scale) < 1e-3)


# ---------------------------------------------------------------- layer listing and units

@dataclass(frozen=True)
class LayerInfo:
    """One addressable layer: its dotted name, module type, output shape (no batch) and channels."""

    name: str
    type: str
    shape: tuple[int, ...]
    channels: int
    default: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "shape": list(self.shape),
                "channels": self.channels, "default": self.default}


def list_layers(model: VisionModel, input_size: Optional[int] = None) -> list[LayerInfo]:
    """Every layer that outputs a tensor, in execution order, found with one dummy forward."""
    size = input_size or model.input_size
    seen: dict[str, LayerInfo] = {}
    defaults = set(model.spec.default_layers)
    handles = []

    def make_hook(name, module):
        def hook(mod, inputs, output):
            if name in seen or not isinstance(output, torch.Tensor):
                return
            shape = tuple(output.shape[1:])
            channels = shape[0] if shape else 1
            seen[name] = LayerInfo(name, type(module).__name__, shape, channels, name in defaults)
        return hook

    try:
        for name, module in model.net.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name, module)))
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=model.mean.device))
    finally:
        for h in handles:
            h.remove()
    return list(seen.values())


_UNIT = re.compile(r"^(?P<layer>[^:@]+):(?P<channel>-?\d+)(?:@(?P<y>-?\d+),(?P<x>-?\d+))?$")


@dataclass(frozen=True)
class Unit:
    """`LAYER:CHANNEL` or `LAYER:CHANNEL@Y,X` (a single spatial neuron)."""

    layer: str
    channel: int
    y: Optional[int] = None
    x: Optional[int] = None

    def __str__(self) -> str:
        pos = f"@{self.y},{self.x}" if self.y is not None else ""
        return f"{self.layer}:{self.channel}{pos}"


def parse_unit(text: str) -> Unit:
    """Parse `LAYER:INDEX[@Y,X]`; UserError on malformed text."""
    m = _UNIT.match(text.strip())
    if not m:
        raise UserError(f"bad unit {text!r}: expected LAYER:INDEX or LAYER:INDEX@Y,X")
    y, x = m.group("y"), m.group("x")
    return Unit(m.group("layer"), int(m.group("channel")), None if y is None else int(y),
                None if x is None else int(x))


def check_unit(unit: Unit, layers: Sequence[LayerInfo]) -> LayerInfo:
    """Validate a unit against a layer listing: unknown layer or out-of-range index -> UserError."""
    by_name = {info.name: info for info in layers}
    if unit.layer not in by_name:
        raise UserError(f"unknown layer {unit.layer!r}{close_matches(unit.layer, by_name)}")
    info = by_name[unit.layer]
    if not 0 <= unit.channel < info.channels:
        raise UserError(f"unit {unit.channel} out of range for layer {unit.layer} "
                        f"({info.channels} channels: 0..{info.channels - 1})")
    if unit.y is not None:
        if len(info.shape) != 3:
            raise UserError(f"layer {unit.layer} has no spatial positions (shape {info.shape})")
        h, w = info.shape[1:]
        if not (0 <= unit.y < h and 0 <= unit.x < w):
            raise UserError(f"position @{unit.y},{unit.x} out of range for layer {unit.layer} ({h}x{w})")
    return info
