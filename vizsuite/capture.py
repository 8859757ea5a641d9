"""Activation capture with hooks that never outlive the call, and truncated forwards.

    with Capture(model, ["blocks.4", "blocks.5"]) as cap:
        acts = cap(images)          # runs only as far as blocks.5

Hooks are registered on enter and removed on exit (also after an exception). With
`stop_early=True` the forward is cut right after the last requested layer has produced its
output, so no compute is spent on later layers.
"""

from __future__ import annotations

import re
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
