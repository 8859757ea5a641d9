"""Activation patching: put units' activations recorded on a source image into a destination
image and measure how much of the source-destination difference of a target comes back.

    r = patch(model, "cat.png", "car.png", ["blocks.5:12"], target="tabby")
    r.before, r.after, r.restored          # restored = (after - before) / (source - before)
    sweep = patch_sweep(model, src, dst, "blocks.5", target)        # every channel, one at a time
    heat = patch_positions(model, src, dst, "blocks.5", target)     # every position (all channels)

A class target "top1" means the source image's top-1 class. Sweeps run on the batched engine
of `effects` (the destination's activation, patched one unit / position per row, many rows per
forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .. import hooks as H
from ..errors import UserError
from ..units import Unit, layer_units
from .edits import patch_units, set_from
from .effects import LayerRunner, _units, chunk_size, frozen
from .targets import Target, parse_target


def _fraction(after, before: float, source: float):
    diff = source - before
    if abs(diff) < 1e-12:
        return np.full(np.shape(after), np.nan) if np.ndim(after) else float("nan")
    return (np.asarray(after, dtype=np.float64) - before) / diff if np.ndim(after) else (after - before) / diff


def _image(model, img) -> torch.Tensor:
    from ..images import load_batch

    if isinstance(img, torch.Tensor):
        x = img if img.dim() == 4 else img[None]
    else:
        x = load_batch([img], model.input_size, model.spec.crop_pct)
    if x.shape[0] != 1:
        raise UserError(f"patching takes one source and one destination image, got a batch of {x.shape[0]}")
    return x.to(getattr(model, "mean", torch.zeros(1)).device)


@dataclass
class PatchResult:
    """The destination's target before and after patching `units`, the source's target, and
    the fraction of the source-destination difference restored."""

    units: list
    target: Target
    before: float
    after: float
    source_value: float
    restored: float
    target_class: Optional[int] = None


@dataclass
class PatchSweep:
    """Patching one unit at a time: after and restored per unit (U,)."""

    units: list
    target: Target
    before: float
    source_value: float
    after: np.ndarray
    restored: np.ndarray
    target_class: Optional[int] = None


@dataclass
class PositionSweep:
    """Patching one spatial position at a time (all channels, or `units`, there): H x W maps."""

    layer: str
    units: Optional[list]
    target: Target
    before: float
    source_value: float
    after: np.ndarray
    restored: np.ndarray
    target_class: Optional[int] = None


def patch(model, source, dest, units: Sequence, target="top1", *, bases=None, prob: bool = False,
          fast: bool = True, mask=None) -> PatchResult:
    """Patch `units` (any layers and bases; positioned units patch one position, `mask` a region)
    from `source` into `dest` (images: 1 x 3 x S x S tensors in [0, 1] or paths)."""
    from ..units import parse_unit

    units = [parse_unit(u, bases) for u in ([units] if isinstance(units, (str, Unit)) else units)]
    if not units:
        raise UserError("no units to patch")
    target = parse_target(target, model, bases, prob)
    layers = list(dict.fromkeys(u.layer for u in units))
    net = frozen(model, layers + [target.layer], fast)
    xs, xd = _image(model, source), _image(model, dest)
    read = list(dict.fromkeys(layers + ([target.layer] if target.layer else [])))
    with torch.no_grad():
        with H.Hooks(net, read, stop_early=False) as h:
            src_acts = h(xs)
            src_logits = h.output
        classes = target.classes(src_logits, 1)
        source_value = float(target.read(src_logits, src_acts, classes)[0])
        with H.Hooks(net, read, stop_early=False) as h:
            acts = h(xd)
            before = float(target.read(h.output, acts, classes)[0])
        with H.Hooks(net, read, patch_units(units, src_acts, mask), stop_early=False) as h:
            acts = h(xd)
            after = float(target.read(h.output, acts, classes)[0])
    return PatchResult(units, target, before, after, source_value, float(_fraction(after, before, source_value)),
                       None if classes is None else int(classes[0]))


def _prepare(model, source, dest, layer, target, bases, prob, fast, check):
    target = parse_target(target, model, bases, prob)
    net = frozen(model, [layer, target.layer], fast)
    runner = LayerRunner(net, layer, target, check=check)
    xs, xd = _image(model, source), _image(model, dest)
    a_s, v_s, classes, _ = runner.base(xs, grad=False)
    a_d, _, _, _ = runner.base(xd, grad=False)
    return target, runner, xd, a_s, a_d, float(v_s[0]), classes


def _evaluate_all(runner, xd, a_d, fns, classes, chunk) -> tuple[float, np.ndarray]:
    """before (the unpatched destination, same path) and the target for each variant fn."""
    out = np.zeros(len(fns))
    step = chunk_size(a_d, chunk, max(1, len(fns)))
    before = None
    for lo in range(0, max(1, len(fns)), step):
        with torch.no_grad():
            variants = [f(a_d) for f in fns[lo:lo + step]]
        rows = torch.cat(variants if before is not None else [a_d] + variants)
        vals = runner.evaluate(xd, rows, classes).cpu().numpy()
        if before is None:
            before, vals = float(vals[0]), vals[1:]
        out[lo:lo + len(variants)] = vals
    return before, out


def patch_sweep(model, source, dest, layer_or_units, target="top1", *, bases=None, prob: bool = False,
                fast: bool = True, chunk: Optional[int] = None, check: bool = True) -> PatchSweep:
    """Patch each unit of a layer (or each of `units`, one layer) alone: after and restored per unit."""
    layer, units = _units(layer_or_units, bases)
    target, runner, xd, a_s, a_d, source_value, classes = _prepare(model, source, dest, layer, target, bases,
                                                                   prob, fast, check)
    units = units or layer_units(layer, a_d.shape[1])
    fns = [set_from(u, a_s).fn for u in units]
    before, after = _evaluate_all(runner, xd, a_d, fns, classes, chunk)
    return PatchSweep(units, target, before, source_value, after, _fraction(after, before, source_value),
                      None if classes is None else int(classes[0]))


def patch_positions(model, source, dest, layer: str, target="top1", units: Optional[Sequence] = None, *,
                    bases=None, prob: bool = False, fast: bool = True, chunk: Optional[int] = None,
                    check: bool = True) -> PositionSweep:
    """Patch one position at a time: every channel there (or only `units`, of `layer`): H x W
    maps of after and restored (where in the layer the information sits)."""
    if units:
        layer, units = _units(units, bases)
    target, runner, xd, a_s, a_d, source_value, classes = _prepare(model, source, dest, layer, target, bases,
                                                                   prob, fast, check)
    if a_d.dim() != 4:
        raise UserError(f"layer {layer} has no spatial positions (shape {tuple(a_d.shape[1:])})")
    h, w = a_d.shape[2:]
    fns = []
    for y in range(h):
        for x in range(w):
            m = torch.zeros(h, w, dtype=torch.bool)
            m[y, x] = True
            if units:
                fns.append(_compose([set_from(u, a_s, mask=m).fn for u in units]))
            else:
                fns.append(H.patch(layer, a_s, mask=m).fn)
    before, after = _evaluate_all(runner, xd, a_d, fns, classes, chunk)
    after = after.reshape(h, w)
    return PositionSweep(layer, units, target, before, source_value, after, _fraction(after, before, source_value),
                         None if classes is None else int(classes[0]))


def _compose(fns):
    def fn(out):
        for f in fns:
            out = f(out)
        return out
    return fn
