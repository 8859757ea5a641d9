"""Tuning curves: every unit of a layer against the synthetic stimulus families, in one
truncated forward per batch (docs/describe.md#tuning).

A unit's response to a stimulus is `Unit.value` (its own reduction over positions, the mean by
default, or its position for `LAYER:K@Y,X`): the stimuli are full-field textures, so the mean
and the centre read the same pattern and the mean is less noisy.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..errors import UserError
from ..units import Unit
from .records import Tuning
from .stimuli import FAMILIES, Stimulus, batches, stimulus_set


def layer_of(units: Sequence[Unit]) -> str:
    layers = sorted({u.layer for u in units})
    if len(layers) != 1:
        raise UserError(f"units to describe together must be of one layer (given: {', '.join(layers)})")
    return layers[0]


def frozen_net(model, layer: str, output: bool):
    """The frozen inference copy (batch norms folded outside `layer`), as the stream pass runs."""
    from ..capture import frozen_copy

    return frozen_copy(model, keep=[layer], output=output)


def unit_responses(model, units: Sequence[Unit], images, *, logits: bool = False, batch_size: int = 32,
                   net=None):
    """Values (N x U, float64 numpy) of `units` (one layer) on image batches (an iterable of
    N x 3 x S x S tensors in [0, 1]); with `logits`, also the model's log-probabilities (N x K,
    None when the model does not output N x classes). Without `logits` the forward stops at the
    layer."""
    from ..hooks import Hooks
    from ..stream import unit_values

    layer = layer_of(units)
    net = net if net is not None else frozen_net(model, layer, logits)
    device = model.mean.device
    vals, logp = [], []
    with Hooks(net, [layer], stop_early=not logits, detach=True) as h, torch.no_grad():
        for x in images:
            acts = h(x.to(device))
            vals.append(unit_values(acts[layer].float(), units).double().cpu())
            if logits and isinstance(h.output, torch.Tensor) and h.output.dim() == 2:
                logp.append(torch.log_softmax(h.output.double(), 1).cpu())
    if not vals:
        raise UserError("no images to read the units on")
    lp = torch.cat(logp).numpy() if logp and len(logp) == len(vals) else None
    return torch.cat(vals).numpy(), lp


def stimulus_responses(model, units: Sequence[Unit], families: Sequence[str] = tuple(FAMILIES),
                       batch_size: int = 32, progress: bool = False):
    """(stimuli, responses S x U): every unit's value on every stimulus (blank first)."""
    from tqdm import tqdm

    size = model.input_size
    stimuli = stimulus_set(size, families)
    total = math.ceil(len(stimuli) / batch_size)
    it = tqdm(batches(stimuli, size, batch_size), total=total, desc="stimuli", unit="batch",
              disable=not progress, leave=False)
    values, _ = unit_responses(model, units, it, batch_size=batch_size)
    return stimuli, values


def _circular(values: np.ndarray, curve: np.ndarray, period: float) -> tuple[float, float]:
    """(preferred, 1 - circular variance) of a curve over a circular parameter: the mean angle
    of the values weighted by the response above the curve's minimum."""
    w = curve - curve.min()
    if not np.isfinite(w).all() or w.sum() <= 0:
        return float(values[int(np.argmax(curve))]), 0.0
    z = (w * np.exp(1j * 2 * np.pi * values / period)).sum() / w.sum()
    pref = (math.degrees(math.atan2(z.imag, z.real)) * period / 360.0) % period
    return float(pref), float(abs(z))


def _linear(values: np.ndarray, curve: np.ndarray) -> tuple[float, float]:
    """(argmax, (max - mean) / (max - min)): 0 for a flat curve, 1 - 1/n for a single peak."""
    lo, hi = float(curve.min()), float(curve.max())
    pref = float(values[int(np.argmax(curve))])
    if not math.isfinite(hi - lo) or hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return pref, 0.0
    return pref, float((hi - curve.mean()) / (hi - lo))


def tuning_curves(stimuli: Sequence[Stimulus], responses: np.ndarray) -> tuple[list[list[Tuning]], np.ndarray]:
    """Per unit, one Tuning per family in the set, and the blank's response per unit.

    Per family the responses are averaged over the nuisance parameter (phase, polarity), the
    secondary parameter (period, saturation, radius) is the one with the largest response, and
    the curve runs over the family's parameter at it. Drives are normalized per unit so the
    best family has drive 1."""
    fams: dict[str, list[int]] = {}
    for i, s in enumerate(stimuli):
        fams.setdefault(s.family, []).append(i)
    blank = responses[fams["blank"][0]] if "blank" in fams else np.zeros(responses.shape[1])
    per_unit: list[list[Tuning]] = [[] for _ in range(responses.shape[1])]
    for fam, rows in fams.items():
        if fam == "blank":
            continue
        parameter, units, period = FAMILIES[fam]
        values = np.array(sorted({stimuli[i].value for i in rows}))
        seconds = np.array(sorted({stimuli[i].secondary for i in rows}))
        grid = np.zeros((len(values), len(seconds), responses.shape[1]))
        count = np.zeros((len(values), len(seconds), 1))
        vi = {v: j for j, v in enumerate(values)}
        si = {v: j for j, v in enumerate(seconds)}
        for i in rows:
            s = stimuli[i]
            grid[vi[s.value], si[s.secondary]] += responses[i]
            count[vi[s.value], si[s.secondary]] += 1
        grid /= np.maximum(count, 1)
        for u in range(responses.shape[1]):
            g = grid[:, :, u]
            best = int(np.argmax(g.max(0)))
            curve = g[:, best]
            pref, sel = _circular(values, curve, period) if period else _linear(values, curve)
            per_unit[u].append(Tuning(fam, parameter, units, pref, sel, float(curve.max() - blank[u]),
                                      float(curve.max()), [float(v) for v in values], [float(c) for c in curve],
                                      float(seconds[best]), int(np.argmax(curve))))
    for tunings in per_unit:
        top = max((t.drive for t in tunings), default=0.0)
        for t in tunings:
            t.drive = float(max(0.0, t.drive) / top) if top > 0 else 0.0
    return per_unit, blank


def angle_diff(a: float, b: float, period: float) -> float:
    """Distance of two circular values (degrees) with the given period."""
    d = abs(a - b) % period
    return min(d, period - d)
