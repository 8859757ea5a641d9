"""Edits on any unit kind and the `intervene` context manager (a thin layer over `hooks.Hooks`).

    with intervene(model, [zero_ablate(u), steer(v, 4.0), clamp(w, high=1.0)]) as h:
        logits = model(images)            # or h(images) to read layers as well

Every constructor returns a `hooks.Edit`; edits compose (several on one layer apply in the
order given) and live only inside the `with` block, also when the forward raises. A unit with a
position (`LAYER:K@Y,X`) edits that position only; `mask=` (bool H x W) edits a spatial region.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .. import hooks as H
from ..errors import UserError
from ..stream import Batch, ChannelStats, Reducer, stream
from ..units import Unit

MODES = ("zero", "mean", "resample")


@contextlib.contextmanager
def intervene(model, edits: Sequence[H.Edit], read: Sequence[str] = ()) -> Iterator[H.Hooks]:
    """Apply `edits` to every forward of `model` inside the block (hooks removed on exit, also on
    exceptions); yields the `Hooks` manager (call it to run a forward and read `read` layers)."""
    with H.Hooks(model, read, list(edits), stop_early=False) as h:
        yield h


# ---------------------------------------------------------------- edit constructors

def zero_ablate(unit: Unit, mask=None) -> H.Edit:
    """The unit reads 0 (at its position, inside `mask`, or everywhere)."""
    return H.zero(unit, mask=mask)


def mean_ablate(unit: Unit, mean, mask=None, per_position: bool = False) -> H.Edit:
    """The unit reads its reference mean: a number, a tensor (H x W), or a `ChannelStats` /
    `UnitMeans` of the unit's layer over a reference image set (see `reference_mean`)."""
    if isinstance(mean, (ChannelStats, UnitMeans)):
        mean = reference_mean(unit, mean, per_position)
    e = H.mean_ablate(unit, mean, mask=mask)
    return e


def resample_ablate(unit: Unit, source_activation: torch.Tensor, mask=None) -> H.Edit:
    """The unit reads what it read on another image (`source_activation`: the layer's output
    there, 1 x C [x H x W] or one row per destination image)."""
    return set_from(unit, source_activation, mask, "resample")


def set_from(unit: Unit, source_activation: torch.Tensor, mask=None, what: str = "patch") -> H.Edit:
    """The unit reads, at each position, its value in `source_activation` (activation patching
    of one unit: the layer moves along the unit's direction only)."""
    value = unit.map(source_activation.detach())
    e = H.set_unit(unit, value, mask=mask)
    e.description = f"{what}({unit})"
    return e


def patch_units(units: Sequence[Unit], source: dict, mask=None) -> list[H.Edit]:
    """Patch each unit from `source` ({layer: activation recorded on the source images})."""
    missing = sorted({u.layer for u in units} - set(source))
    if missing:
        raise UserError(f"no source activation recorded for layer(s) {', '.join(missing)}")
    return [set_from(u, source[u.layer], mask) for u in units]


def steer(unit: Unit, alpha: float, mask=None) -> H.Edit:
    """Add alpha x the unit's direction (a channel's unit vector, a direction row, a dictionary
    decoder row) at its position, inside `mask`, or everywhere."""
    def fn(out):
        d = unit.basis.direction(unit.index, out.shape[1])
        region = H.region_mask(out, unit, mask)
        return H.add(unit.layer, d, alpha, mask=region).fn(out)
    return H.Edit(unit.layer, fn, 0, f"steer({unit}, alpha={alpha:g})")


def clamp(unit: Unit, low: Optional[float] = None, high: Optional[float] = None, mask=None) -> H.Edit:
    """Clamp the unit's value into [low, high] at each position (of its position or `mask`)."""
    return H.clamp(unit, low, high, mask=mask)


def ablation(unit: Unit, mode: str, mean=None, source: Optional[torch.Tensor] = None, mask=None) -> H.Edit:
    """The edit of one ablation mode: zero, mean (needs `mean`), resample (needs `source`)."""
    if mode == "zero":
        return zero_ablate(unit, mask)
    if mode == "mean":
        if mean is None:
            raise UserError("mean ablation needs a reference mean (or reference images)")
        return mean_ablate(unit, mean, mask)
    if mode == "resample":
        if source is None:
            raise UserError("resample ablation needs a source activation (another image)")
        return resample_ablate(unit, source, mask)
    raise UserError(f"unknown ablation mode {mode!r} (expected one of {', '.join(MODES)})")


# ---------------------------------------------------------------- reference means

class UnitMeans(Reducer):
    """Mean feature map (H x W) of each unit over a reference set: what mean ablation of a
    non-linear feature (a dictionary feature) needs; channels and directions use ChannelStats."""

    def __init__(self, units: Sequence[Unit]):
        layers = {u.layer for u in units}
        if len(layers) != 1:
            raise UserError("UnitMeans reads one layer at a time")
        self.units = list(units)
        self.layers = (self.units[0].layer,)
        self.sum: Optional[torch.Tensor] = None
        self.images = 0

    def key(self):
        return {"units": [u.to_json() for u in self.units]}

    def update(self, batch: Batch) -> None:
        a = batch.acts[self.layers[0]].detach().double().cpu()
        maps = torch.stack([u.map(a) for u in self.units], 1)
        maps = maps if maps.dim() == 4 else maps[:, :, None, None]
        self.sum = maps.sum(0) if self.sum is None else self.sum + maps.sum(0)
        self.images += a.shape[0]

    @property
    def mean_map(self) -> torch.Tensor:
        """U x H x W."""
        return self.sum / max(self.images, 1)

    def state(self) -> dict:
        return {"sum": self.sum.numpy(), "images": np.array(self.images)}

    def load(self, state: dict) -> None:
        self.sum, self.images = torch.from_numpy(state["sum"]), int(state["images"])


def reference_stats(model, images, layer_or_units: Union[str, Sequence[Unit]], *, batch_size: int = 16,
                    cache_dir=None, progress: bool = False):
    """One streaming pass over reference `images` (a folder or paths): `ChannelStats` of the
    layer (channels, directions) or `UnitMeans` (any unit kind, e.g. dictionary features)."""
    if isinstance(layer_or_units, str):
        reducer: Reducer = ChannelStats(layer_or_units)
    elif all(u.is_channel or u.basis.kind == "directions" for u in layer_or_units):
        reducer = ChannelStats(layer_or_units[0].layer)
    else:
        reducer = UnitMeans(layer_or_units)
    stream(model, images, [reducer], batch_size=batch_size, cache_dir=cache_dir, progress=progress,
           desc="reference means")
    return reducer


def reference_mean(unit: Unit, stats, per_position: bool = False) -> torch.Tensor:
    """The unit's mean over the reference set that `stats` summarized: over images and positions
    (a scalar; at the unit's position for a positioned unit), or the mean map H x W with
    `per_position`. Channels and directions (linear) come from ChannelStats; a dictionary
    feature needs UnitMeans."""
    if isinstance(stats, UnitMeans):
        if unit not in stats.units:
            raise UserError(f"no reference mean was recorded for unit {unit}")
        m = stats.mean_map[stats.units.index(unit)]
    elif isinstance(stats, ChannelStats):
        if stats.layer != unit.layer:
            raise UserError(f"reference statistics are of layer {stats.layer}, not {unit.layer}")
        if stats.map_sum is None:
            raise UserError("reference statistics are empty (no images were read)")
        if not (unit.is_channel or unit.basis.kind == "directions"):
            raise UserError(f"mean ablation of {unit.basis.kind} feature {unit} needs UnitMeans "
                            f"(the feature is not linear in the channels)")
        if unit.is_channel:
            m = stats.mean_map[unit.index]
        else:
            m = unit.basis.encode_one(stats.mean_map[None], unit.index)[0]
    else:
        raise UserError(f"not reference statistics: {type(stats).__name__}")
    m = m.float()
    if per_position:
        return m
    if unit.y is not None and m.dim() == 2:
        return m[unit.y, unit.x]
    return m.mean()
