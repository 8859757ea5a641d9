"""One hook manager for reading and writing activations (docs/hooks.md).

    with Hooks(model, read=["blocks.4"]) as h:          # read (truncated forward)
        acts = h(images)                                # runs only as far as blocks.4
    with Hooks(model, read=["blocks.5"], edits=[zero(parse_unit("blocks.4:3"))], stop_early=False) as h:
        acts = h(images); logits = h.output             # write: channel 3 of blocks.4 ablated

Contract (the zennit way): hooks are registered on enter and removed on exit, also when the
forward raises; nothing else of the model is touched (no attributes, no global patching). Names
resolve once, here, for reads and writes alike. A module called more than once per forward is
counted: reads keep the first call in `activations` and every call in `calls`; an edit applies
to the call it names (`call=0`, the default) or to every call (`call=None`).
Writes act on the output of the module the user named; on `capture.inference_copy` pass the
written layers in `keep` so that no batch-norm fold moves a named conv's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import nn

from .errors import UserError, close_matches
from .units import Unit

Layer = Union[str, nn.Module]


class _StopForward(Exception):
    """Raised inside a hook to end the forward pass early; caught by Hooks.__call__."""


def resolve(model: nn.Module, name: Layer, what: str = "layer") -> nn.Module:
    """The module at a dotted `named_modules()` path (of a VisionModel's inner net); UserError
    with close matches when unknown. A module passes through."""
    if isinstance(name, nn.Module):
        return name
    layer = getattr(model, "layer", None)
    if callable(layer) and hasattr(model, "spec"):
        return layer(name)
    modules = dict(model.named_modules())
    if not name or name not in modules:
        raise UserError(f"unknown {what} {name!r}{close_matches(name, [n for n in modules if n])}")
    return modules[name]


# ---------------------------------------------------------------- edits (writes)

@dataclass
class Edit:
    """A write: the output of `layer` becomes `fn(output)` (or `fn(output, input)` with
    `needs_input`) on call `call` of each forward (None: every call)."""

    layer: Layer
    fn: Callable
    call: Optional[int] = 0
    description: str = ""
    needs_input: bool = False

    def __str__(self) -> str:
        return self.description or f"edit({self.layer})"


def replace(layer: Layer, value, call: Optional[int] = 0) -> Edit:
    """The layer outputs `value` (a tensor, broadcast to the output's shape, or a function of
    the output)."""
    fn = value if callable(value) else (lambda out: torch.as_tensor(value).to(out).expand_as(out).clone())
    return Edit(layer, fn, call, f"replace({layer})")


def region_mask(out: torch.Tensor, unit: Optional[Unit] = None, mask=None) -> Optional[torch.Tensor]:
    """The spatial region an edit acts on, as a bool H x W (or N x H x W) tensor: the unit's
    position, else `mask` (bool or 0/1, H x W or N x H x W), else None (everywhere). Both given:
    their intersection."""
    region = None
    if unit is not None and unit.y is not None:
        if out.dim() != 4:
            raise UserError(f"layer {unit.layer} has no spatial positions (shape {tuple(out.shape[1:])})")
        region = torch.zeros(out.shape[-2:], dtype=torch.bool, device=out.device)
        region[unit.y, unit.x] = True
    if mask is not None:
        m = torch.as_tensor(mask, device=out.device).bool()
        if out.dim() != 4 or m.shape[-2:] != out.shape[-2:] or m.dim() not in (2, 3):
            raise UserError(f"region mask of shape {tuple(m.shape)} does not fit the layer's positions "
                            f"{tuple(out.shape[2:]) if out.dim() == 4 else '(none)'}")
        region = m if region is None else region & m
    return region


def _positioned(unit: Unit, out: torch.Tensor, new: torch.Tensor, mask=None) -> torch.Tensor:
    region = region_mask(out, unit, mask)
    if region is None:
        return new
    if region.dim() == 3:  # one region per row: N x 1 x H x W
        region = region[:, None]
    return torch.where(region, new, out)


def set_unit(unit: Unit, value, call: Optional[int] = 0, mask=None) -> Edit:
    """The unit reads `value` (a number, or a tensor N [x H x W]) at its position, inside `mask`
    (a spatial region, bool H x W), or everywhere; the layer changes along the unit's direction only."""
    def fn(out):
        v = value if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        return _positioned(unit, out, unit.basis.set_feature(out, unit.index, v.to(out.device, out.dtype)), mask)
    where = "" if mask is None else ", region"
    return Edit(unit.layer, fn, call,
                f"set({unit}, {value if not isinstance(value, torch.Tensor) else 'tensor'}{where})")


def zero(unit: Unit, call: Optional[int] = 0, mask=None) -> Edit:
    """Zero-ablate a unit (at its position, in `mask`, or everywhere)."""
    e = set_unit(unit, 0.0, call, mask)
    e.description = f"zero({unit})"
    return e


def mean_ablate(unit: Unit, mean, call: Optional[int] = 0, mask=None) -> Edit:
    """Set a unit to its mean over a reference set (a number, or per-position H x W)."""
    e = set_unit(unit, mean, call, mask)
    e.description = f"mean_ablate({unit})"
    return e


def clamp(unit: Unit, low=None, high=None, call: Optional[int] = 0, mask=None) -> Edit:
    """Clamp a unit's value into [low, high] (either may be None) at each position (in the
    unit's position or `mask` only, when given); the layer moves along the unit's direction."""
    if low is None and high is None:
        raise UserError(f"clamp({unit}) needs a lower or an upper bound")
    if low is not None and high is not None and float(low) > float(high):
        raise UserError(f"clamp({unit}): lower bound {low} is above upper bound {high}")

    def fn(out):
        now = unit.basis.encode_one(out, unit.index)
        target = now.clamp(min=None if low is None else float(low), max=None if high is None else float(high))
        return _positioned(unit, out, unit.basis.set_feature(out, unit.index, target), mask)
    return Edit(unit.layer, fn, call, f"clamp({unit}, {low}, {high})")


def add(layer: Layer, vector, alpha: float = 1.0, call: Optional[int] = 0, mask=None) -> Edit:
    """Steer: add alpha x `vector` (C,) at every position of the layer (or inside `mask`, a
    bool H x W spatial region)."""
    vec = torch.as_tensor(vector).flatten()

    def fn(out):
        if out.shape[1] != vec.numel():
            raise UserError(f"steering vector has {vec.numel()} values, layer {layer} has {out.shape[1]} channels")
        shape = (1, -1) + (1,) * (out.dim() - 2)
        step = alpha * vec.to(out.device, out.dtype).view(shape)
        if mask is None:
            return out + step
        region = region_mask(out, None, mask)
        return torch.where(region if region.dim() == 2 else region[:, None], out + step, out)
    return Edit(layer, fn, call, f"add({layer}, alpha={alpha:g}{', region' if mask is not None else ''})")


def patch(layer: Layer, stored: torch.Tensor, channels: Optional[Sequence[int]] = None,
          call: Optional[int] = 0, mask=None) -> Edit:
    """Patch: the layer's output (or only `channels` of it, and only inside `mask`, a bool
    H x W spatial region, when given) becomes `stored`, recorded from other images (same shape;
    a batch of 1 is broadcast)."""
    def fn(out):
        src = stored.to(out.device, out.dtype)
        if src.shape[1:] != out.shape[1:]:
            raise UserError(f"patch for {layer}: stored activation {tuple(src.shape[1:])} "
                            f"does not match the layer's {tuple(out.shape[1:])}")
        src = src.expand_as(out)
        if channels is None:
            new = src.clone()
        else:
            new = out.clone()
            idx = torch.as_tensor(list(channels), dtype=torch.long, device=out.device)
            new[:, idx] = src[:, idx]
        region = region_mask(out, None, mask)
        if region is None:
            return new
        return torch.where(region if region.dim() == 2 else region[:, None], new, out)
    return Edit(layer, fn, call, f"patch({layer}{', region' if mask is not None else ''})")


def pass_through(module: nn.Module) -> Edit:
    """The module outputs its input unchanged (also when it works in place)."""
    return Edit(module, lambda out, inp: inp, None, f"identity({type(module).__name__})", needs_input=True)


# ---------------------------------------------------------------- the manager

class Hooks:
    """Context manager reading named layers and applying edits; call it to run a forward.

    read: layer names (or modules) whose outputs to record; edits: Edits to apply.
    stop_early: end the forward right after the last read layer produced its output (no
    compute on later layers; `output` stays None). detach: record detached tensors.
    strict: a read layer that did not run is an error (else it is just absent).
    """

    def __init__(self, model: nn.Module, read: Iterable[Layer] = (), edits: Sequence[Edit] = (), *,
                 stop_early: bool = True, detach: bool = False, strict: bool = True):
        self.model = model
        self.strict = strict
        self.layers = list(dict.fromkeys(read))
        self.edits = list(edits)
        self.stop_early = stop_early and bool(self.layers)
        self.detach = detach
        self.activations: dict = {}
        self.calls: dict = {}
        self.output: Optional[torch.Tensor] = None
        self._handles: list = []
        self._active = False
        self._count: dict[int, int] = {}
        self._inputs: dict[int, list] = {}
        self._reads = {name: resolve(model, name) for name in self.layers}
        self._writes: dict[int, list[Edit]] = {}
        self._modules: dict[int, nn.Module] = {}
        for e in self.edits:
            m = resolve(model, e.layer)
            self._writes.setdefault(id(m), []).append(e)
            self._modules[id(m)] = m
        self._names: dict[int, list] = {}
        for name, m in self._reads.items():
            self._names.setdefault(id(m), []).append(name)
            self._modules[id(m)] = m

    # -- registration ------------------------------------------------------------------------

    def __enter__(self) -> "Hooks":
        try:
            for mid, module in self._modules.items():
                if isinstance(module, torch.jit.ScriptModule):
                    name = (self._names.get(mid) or [type(module).__name__])[0]
                    raise UserError(f"layer {name!r} is part of a TorchScript model, which cannot be hooked; "
                                    f"load the model from Python code to read its layers")
                if any(e.needs_input for e in self._writes.get(mid, ())):
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(mid)))
                self._handles.append(module.register_forward_hook(self._hook(mid)))
            if self.edits:  # a forward run directly on the model (not via __call__) counts calls afresh
                self._handles.append(self.model.register_forward_pre_hook(lambda m, i: self._reset()))
        except BaseException:
            self.remove()
            raise
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this manager registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._inputs.clear()
        self._active = False

    def _reset(self) -> None:
        self.activations, self.calls, self._count, self._inputs = {}, {}, {}, {}

    def _pre_hook(self, mid: int):
        def hook(module, inputs):
            if not inputs or not isinstance(inputs[0], torch.Tensor):
                return None
            # keep the true input: an in-place module would overwrite it before the hook runs
            self._inputs.setdefault(mid, []).append(inputs[0])
            return (inputs[0].clone(),) + tuple(inputs[1:])
        return hook

    def _hook(self, mid: int):
        def hook(module, inputs, output):
            call = self._count.get(mid, 0)
            self._count[mid] = call + 1
            changed = False
            for e in self._writes.get(mid, ()):
                if e.call is None or e.call == call:
                    output = e.fn(output, self._inputs[mid][call]) if e.needs_input else e.fn(output)
                    changed = True
            for name in self._names.get(mid, ()):
                value = output.detach() if self.detach and isinstance(output, torch.Tensor) else output
                self.calls.setdefault(name, []).append(value)
                self.activations.setdefault(name, value)
            if self.stop_early and len(self.activations) == len(self.layers):
                raise _StopForward
            return output if changed else None
        return hook

    # -- running -----------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor) -> dict:
        """Run the model on `x`; {layer: activation (first call)}. Sets `.output` if it ran to the end."""
        if not self._active:
            raise RuntimeError("Hooks must be used inside its `with` block")
        self._reset()
        self.output = None
        try:
            self.output = self.model(x)
        except _StopForward:
            pass
        missing = [n for n in self.layers if n not in self.activations]
        if missing and self.strict:
            raise UserError(f"layer(s) {', '.join(map(str, missing))} did not run in the forward pass")
        return dict(self.activations)


def activations(model: nn.Module, x: torch.Tensor, layers: Sequence[str], *, grad: bool = False,
                stop_early: bool = True, edits: Sequence[Edit] = ()) -> dict:
    """One-shot read: {layer: activation} for `x`, computing no later layers than needed."""
    with Hooks(model, layers, edits, stop_early=stop_early, detach=not grad) as h:
        with torch.set_grad_enabled(grad):
            return h(x)


def run_edited(model: nn.Module, x: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    """The model's output on `x` with `edits` applied."""
    with Hooks(model, (), edits, stop_early=False):
        return model(x)
