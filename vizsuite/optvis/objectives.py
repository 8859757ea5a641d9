"""Objectives: pure, composable functions of one forward pass, to be maximized.

    obj = 0.5 * channel("blocks.4", 3) - 1e-2 * diversity("blocks.4")
    str(obj)  ->  '0.5 * channel("blocks.4", 3) - 0.01 * diversity("blocks.4")'

An objective maps a `Context` (the images, the captured activations, the logits) to a tensor
of shape (N,): one value per image of the batch. That keeps batching honest: the loss is the
sum, `values[i]` is what image i achieved, and an objective restricted to image i
(`batch=i`, `.on(i)`, or `per_image([...])`) sends gradient into image i only.

Sign convention: unit objectives (neuron, channel, direction, layer, class_*) are rewards to
add; diversity, alignment and the regularizers (total_variation, l1, l2, blur, alpha_mean) are
non-negative penalties to subtract. Every objective declares the layers it reads and whether it
needs the logits, so `render` can stop the forward pass as early as possible.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..units import Directions, Unit, parse_unit
from ..units import spatial as _spatial

# description precedence: atoms bind tightest, then * and /, then + and -
_ATOM, _MUL, _ADD = 3, 2, 1


@dataclass
class Context:
    """What an objective can read: `images` (N x C x H x W in [0, 1], before transforms; may be
    RGBA), `acts` ({layer: activation}) and `logits` (N x classes, or None)."""

    images: torch.Tensor
    acts: dict
    logits: Optional[torch.Tensor] = None

    @property
    def batch(self) -> int:
        return self.images.shape[0]

    def act(self, layer: str) -> torch.Tensor:
        try:
            return self.acts[layer]
        except KeyError:
            raise UserError(f"layer {layer!r} was not captured (objective declared {sorted(self.acts)})") from None


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


class Objective:
    """A function Context -> (N,) values, with a description and the inputs it needs."""

    def __init__(self, fn: Callable[[Context], torch.Tensor], description: str,
                 layers: Sequence[str] = (), needs_logits: bool = False, _prec: int = _ATOM,
                 unit: Optional[Unit] = None):
        self.fn = fn
        #: the unit this objective reads as is (`unit(u)`), which lets `per_image` read image i
        #: of that layer alone
        self.unit = unit
        self.description = description
        self.layers = tuple(dict.fromkeys(layers))
        self.needs_logits = bool(needs_logits)
        self._prec = _prec

    def __call__(self, ctx: Context) -> torch.Tensor:
        out = self.fn(ctx)
        if not isinstance(out, torch.Tensor):
            out = torch.tensor(float(out), device=ctx.images.device)
        return out.expand(ctx.batch) if out.dim() == 0 else out

    def __repr__(self) -> str:
        return self.description

    __str__ = __repr__

    # -- composition ---------------------------------------------------------------------

    def _wrap(self, prec: int) -> str:
        return f"({self.description})" if self._prec < prec else self.description

    @staticmethod
    def _lift(other) -> "Objective":
        if isinstance(other, Objective):
            return other
        if isinstance(other, numbers.Real):
            value = float(other)
            return Objective(lambda ctx: torch.tensor(value, device=ctx.images.device), _num(other))
        return NotImplemented

    def _binary(self, other, op: str, fn, prec: int, right: bool = False) -> "Objective":
        other = self._lift(other)
        if other is NotImplemented:
            return NotImplemented
        a, b = (other, self) if right else (self, other)
        # the right operand of - and / needs brackets at equal precedence too
        left_s = a._wrap(prec)
        right_s = b._wrap(prec + (1 if op in "-/" else 0))
        return Objective(lambda ctx: fn(a(ctx), b(ctx)), f"{left_s} {op} {right_s}",
                         a.layers + b.layers, a.needs_logits or b.needs_logits, prec)

    def __add__(self, o):
        return self._binary(o, "+", torch.add, _ADD)

    def __radd__(self, o):
        return self._binary(o, "+", torch.add, _ADD, right=True)

    def __sub__(self, o):
        return self._binary(o, "-", torch.sub, _ADD)

    def __rsub__(self, o):
        return self._binary(o, "-", torch.sub, _ADD, right=True)

    def __mul__(self, o):
        return self._binary(o, "*", torch.mul, _MUL)

    def __rmul__(self, o):
        return self._binary(o, "*", torch.mul, _MUL, right=True)

    def __truediv__(self, o):
        return self._binary(o, "/", torch.div, _MUL)

    def __rtruediv__(self, o):
        return self._binary(o, "/", torch.div, _MUL, right=True)

    def __neg__(self):
        return Objective(lambda ctx: -self(ctx), f"-{self._wrap(_MUL + 1)}", self.layers,
                         self.needs_logits, _MUL)

    def __pos__(self):
        return self

    def on(self, index: int) -> "Objective":
        """This objective for image `index` only (0 elsewhere, no gradient into other images)."""
        return Objective(lambda ctx: _select(self(ctx), index), f"{self._wrap(_ATOM)}.on({index})",
                         self.layers, self.needs_logits)


def _select(values: torch.Tensor, index: Optional[int]) -> torch.Tensor:
    """Keep values[index] and zero the rest, by indexing (not masking), so only image `index`
    gets gradient."""
    if index is None:
        return values
    n = values.shape[0]
    if not -n <= index < n:
        raise UserError(f"objective for image {index} but the batch has {n} images")
    out = torch.zeros_like(values)
    out[index] = values[index]
    return out


def _args(*parts, batch=None, **named) -> str:
    items = [repr(p) if isinstance(p, str) else _num(p) for p in parts]
    items += [f"{k}={_num(v)}" for k, v in named.items() if v is not None]
    if batch is not None:
        items.append(f"batch={batch}")
    return ", ".join(items)


def _check_channel(a: torch.Tensor, layer: str, channel: int) -> None:
    if not 0 <= channel < a.shape[1]:
        raise UserError(f"unit {channel} out of range for layer {layer} ({a.shape[1]} channels)")


def _q(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"'


# ---------------------------------------------------------------- unit objectives (rewards)

def unit(u, batch: Optional[int] = None, bases=None) -> Objective:
    """Any unit (docs/units.md): a `units.Unit` or its text (`LAYER:K`, `LAYER:K@Y,X`,
    `LAYER/BASIS:K` with `bases`), read as `Unit.value` (mean over positions unless it has one)."""
    u = parse_unit(u, bases)

    def fn(ctx):
        return _select(u.value(_spatial(ctx.act(u.layer), u.layer)), batch)

    if u.is_channel and u.reduce == "mean":
        desc = (f"neuron({_q(u.layer)}, {_args(u.index, batch=batch, y=u.y, x=u.x)})" if u.y is not None
                else f"channel({_q(u.layer)}, {_args(u.index, batch=batch)})")
    elif u.is_channel and u.reduce == "center":
        desc = f"neuron({_q(u.layer)}, {_args(u.index, batch=batch)})"
    else:
        desc = f"unit({_q(str(u))}{'' if u.reduce == 'mean' else ', reduce=' + u.reduce}" \
               f"{', batch=' + str(batch) if batch is not None else ''})"
    return Objective(fn, desc, [u.layer], unit=u if batch is None else None)


def neuron(layer: str, channel: int, y: Optional[int] = None, x: Optional[int] = None,
           batch: Optional[int] = None) -> Objective:
    """One spatial neuron: the channel's activation at (y, x), default the centre position."""
    return unit(Unit(layer, channel, y, x, reduce="mean" if y is not None else "center"), batch)


def channel(layer: str, channel: int, batch: Optional[int] = None) -> Objective:
    """A whole channel: its activation averaged over all positions."""
    return unit(Unit(layer, channel), batch)


def direction(layer: str, vector, batch: Optional[int] = None, cossim_power: float = 0.0) -> Objective:
    """A direction in the layer's channel space: dot product with `vector` at each position,
    averaged; with cossim_power > 0 each dot is weighted by cos(angle)^power (Lucid's
    direction_cossim), which favours activations pointing along the vector, not just large."""
    vec = torch.as_tensor(vector, dtype=torch.float32).flatten()
    basis = Directions(vec[None])
    u = Unit(layer, 0, basis=basis)

    def fn(ctx):
        a = _spatial(ctx.act(layer))
        if a.shape[1] != vec.numel():
            raise UserError(f"direction has {vec.numel()} values, layer {layer} has {a.shape[1]} channels")
        dot = u.map(a)
        if cossim_power:
            v = vec.to(a.device, a.dtype)
            cos = dot / (a.norm(dim=1) * v.norm() + 1e-8)
            dot = dot * cos.clamp_min(0.1) ** cossim_power
        return _select(dot.mean((-2, -1)), batch)

    extra = f", cossim_power={_num(cossim_power)}" if cossim_power else ""
    bat = f", batch={batch}" if batch is not None else ""
    return Objective(fn, f"direction({_q(layer)}, <{vec.numel()}-d vector>{extra}{bat})", [layer])


def layer(layer: str, batch: Optional[int] = None) -> Objective:
    """DeepDream: the mean squared activation of a whole layer."""
    name = layer

    def fn(ctx):
        a = ctx.act(name)
        return _select(a.pow(2).flatten(1).mean(1), batch)

    return Objective(fn, f"layer({_q(name)}{', batch=' + str(batch) if batch is not None else ''})", [name])


deepdream = layer


def class_logit(index: int, batch: Optional[int] = None) -> Objective:
    """A class logit (needs the full forward pass)."""
    def fn(ctx):
        _check_channel(ctx.logits, "logits", index)
        return _select(ctx.logits[:, index], batch)

    return Objective(fn, f"class_logit({_args(index, batch=batch)})", needs_logits=True)


def class_logprob(index: int, batch: Optional[int] = None) -> Objective:
    """A class log-probability (log-softmax): raises the class and lowers the others."""
    def fn(ctx):
        _check_channel(ctx.logits, "logits", index)
        return _select(torch.log_softmax(ctx.logits, dim=1)[:, index], batch)

    return Objective(fn, f"class_logprob({_args(index, batch=batch)})", needs_logits=True)


# ---------------------------------------------------------------- batch objectives (penalties)

def diversity(layer: str) -> Objective:
    """Penalty: how similar each image's style (Gram matrix of `layer`) is to the others'.

    Per image, the mean cosine similarity of its normalized Gram matrix with every other image's
    (0 for a batch of one). Subtract it to push a batch of one unit towards different facets.
    """
    def fn(ctx):
        a = _spatial(ctx.act(layer))
        n, c = a.shape[:2]
        if n < 2:
            return a.new_zeros(n)
        flat = a.reshape(n, c, -1)
        grams = F.normalize((flat @ flat.transpose(1, 2)).reshape(n, -1), dim=1)
        sim = grams @ grams.T
        return (sim.sum(1) - sim.diagonal()) / (n - 1)

    return Objective(fn, f"diversity({_q(layer)})", [layer])


def alignment(layer: str, decay_ratio: float = 2.0) -> Objective:
    """Penalty: mean squared activation difference between images i and i+d (d = 1..4), weighted
    by 1 / decay_ratio^d; subtract it to make neighbouring images of an interpolation agree."""
    def fn(ctx):
        a = ctx.act(layer)
        n = a.shape[0]
        out = a.new_zeros(n)
        for d in range(1, min(5, n)):
            diff = (a[:-d] - a[d:]).pow(2).flatten(1).mean(1) / decay_ratio ** d
            out = out + F.pad(diff, (0, d)) / 2 + F.pad(diff, (d, 0)) / 2  # half to each side
        return out

    return Objective(fn, f"alignment({_q(layer)}, decay_ratio={_num(decay_ratio)})", [layer])


def total_variation(batch: Optional[int] = None) -> Objective:
    """Penalty: mean absolute difference between neighbouring pixels (of the RGB channels)."""
    def fn(ctx):
        x = ctx.images[:, :3]
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1) + \
             (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
        return _select(tv, batch)

    return Objective(fn, f"total_variation({_args(batch=batch)})")


def l1(constant: float = 0.5, batch: Optional[int] = None) -> Objective:
    """Penalty: mean |pixel - constant| (RGB channels)."""
    def fn(ctx):
        return _select((ctx.images[:, :3] - constant).abs().flatten(1).mean(1), batch)

    return Objective(fn, f"l1({_args(constant, batch=batch)})")


def l2(constant: float = 0.5, epsilon: float = 1e-6, batch: Optional[int] = None) -> Objective:
    """Penalty: root-mean-square distance of the pixels from `constant` (RGB channels)."""
    def fn(ctx):
        return _select(((ctx.images[:, :3] - constant).pow(2).flatten(1).mean(1) + epsilon).sqrt(), batch)

    return Objective(fn, f"l2({_args(constant, batch=batch)})")


def blur(batch: Optional[int] = None) -> Objective:
    """Penalty: squared distance of the image from a (gradient-stopped) 3x3 blur of itself;
    subtracting it pulls each step towards a blurrier image (Lucid's blur_input_each_step)."""
    def fn(ctx):
        x = ctx.images[:, :3]
        with torch.no_grad():
            k = torch.full((3, 1, 3, 3), 1 / 9, device=x.device, dtype=x.dtype)
            blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3)
        return _select((x - blurred).pow(2).flatten(1).mean(1), batch)

    return Objective(fn, f"blur({_args(batch=batch)})")


def alpha_mean(batch: Optional[int] = None) -> Objective:
    """Penalty: mean opacity of RGBA images (0 for RGB); subtract it to favour transparency."""
    def fn(ctx):
        if ctx.images.shape[1] < 4:
            return ctx.images.new_zeros(ctx.batch)
        return _select(ctx.images[:, 3].flatten(1).mean(1), batch)

    return Objective(fn, f"alpha_mean({_args(batch=batch)})")


# ---------------------------------------------------------------- batching helpers

def per_image(objectives: Sequence[Objective]) -> Objective:
    """Objective i applies to image i only: K units rendered in one batched forward pass."""
    objectives = list(objectives)
    if not objectives:
        raise UserError("per_image needs at least one objective")

    def fn(ctx):
        if ctx.batch != len(objectives):
            raise UserError(f"{len(objectives)} per-image objectives but the batch has {ctx.batch} images")
        units = [obj.unit for obj in objectives]
        if all(u is not None for u in units):
            # each unit reads its own image only: one unbind per layer, whose backward stacks
            # the K per-image gradients into one buffer, instead of K full-batch zero-filled
            # gradients summed K-1 times (measured: 15 passes over the layer per step -> 2)
            rows = {l: _spatial(ctx.act(l), l).unbind(0) for l in dict.fromkeys(u.layer for u in units)}
            return torch.stack([u.value(rows[u.layer][i].unsqueeze(0))[0] for i, u in enumerate(units)])
        return torch.stack([obj(ctx)[i] for i, obj in enumerate(objectives)])

    layers = [l for o in objectives for l in o.layers]
    desc = "per_image([" + ", ".join(o.description for o in objectives) + "])"
    obj = Objective(fn, desc, layers, any(o.needs_logits for o in objectives))
    obj.parts = objectives
    return obj


def as_objective(obj) -> Objective:
    """An Objective, or a list of them (-> per_image)."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, (list, tuple)):
        return per_image(obj)
    raise UserError(f"expected an Objective or a list of them, got {type(obj).__name__}")
