"""Exact ablation effects at scale, and the first-order estimate (attribution patching).

    fx = ablation_effects(model, "blocks.5", "photos/", target="top1", mode="zero")
    fx.effect          # (U,) mean change of the target, ablated minus intact
    fx.estimate        # (U,) gradient x (ablated - actual), one backward per image batch
    fx.rank_correlation

How it runs (and why it is fast): per image batch, ONE forward+backward of the whole network
reads the layer's activation A, the intact target and d target / d A. Then, per image, the
ablated copies of A (one per unit, `chunk` at a time; a unit whose ablation changes nothing, e.g. a channel
that is zero on the image, has effect 0 and is not run) are stacked into a batch and put in place
of the layer's output (a `hooks.replace` edit) while the network runs on that image alone:
the part below the layer runs at batch 1 and its tensors broadcast into the batch of copies
(residual branches that skip past the layer stay exact: they are the same image's), the part
above runs on all copies at once. A module that mixes rows of a batch would break that; the
first chunk of every call is therefore checked against the same chunk run on the image
repeated (exact by construction), and on a mismatch every chunk runs that way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .. import hooks as H
from ..errors import UserError
from ..units import Unit, layer_units, parse_unit
from .edits import MODES, ablation, reference_stats
from .targets import Target, parse_target

#: elements of stacked activation copies per chunk (bounds memory: 2**24 floats = 64 MiB)
MAX_CHUNK_ELEMENTS = 1 << 24


# ---------------------------------------------------------------- the engine

class LayerRunner:
    """Runs `net` with a layer's output replaced, reading a target (see the module doc).

    net: the model (a VisionModel or its inference copy); layer: where activations are replaced;
    target: a Target. `base(x)` -> (A, values, classes, grad); `evaluate(x1, V, cls)` -> the
    target for each row of V (B x C [x H x W]) put in place of the layer's output on image x1."""

    def __init__(self, net, layer: str, target: Target, check: bool = True):
        self.net, self.layer, self.target = net, layer, target
        self.read = [target.layer] if target.kind == "unit" else []
        self.broadcast: Optional[bool] = None if check else True
        H.resolve(net, layer)

    def base(self, x: torch.Tensor, grad: bool = True):
        holder: dict = {}

        def grab(out):
            if not isinstance(out, torch.Tensor):
                raise UserError(f"layer {self.layer} does not output a tensor")
            a = out.detach().requires_grad_(grad)
            holder["a"] = a
            holder["target_first"] = bool(self.read) and self.read[0] in h.activations and self.read[0] != self.layer
            return a

        with torch.set_grad_enabled(grad), H.Hooks(self.net, self.read, [H.replace(self.layer, grab)],
                                                   stop_early=bool(self.read)) as h:
            acts = h(x)
            if "a" not in holder and not (self.read and self.read[0] in acts):
                raise UserError(f"layer {self.layer} did not run in the forward pass")
            if "a" not in holder or holder["target_first"]:
                raise UserError(f"target {self.target.unit} is computed before layer {self.layer}: "
                                f"ablating {self.layer} cannot change it")
            classes = self.target.classes(h.output, x.shape[0])
            values = self.target.read(h.output, acts, classes)
            a = holder["a"]
            g = None
            if grad:
                if values.requires_grad:
                    (g,) = torch.autograd.grad(values.sum(), a, allow_unused=True)
                g = torch.zeros_like(a) if g is None else g
        return a.detach(), values.detach(), classes, g

    def _run(self, x1: torch.Tensor, variants: torch.Tensor, cls, repeat: bool) -> torch.Tensor:
        def put(out):
            if out.shape[1:] != variants.shape[1:]:
                raise UserError(f"replacement activations {tuple(variants.shape[1:])} do not match layer "
                                f"{self.layer}'s output {tuple(out.shape[1:])}")
            return variants.to(out.device, out.dtype).clone()

        x = x1.expand(variants.shape[0], *x1.shape[1:]) if repeat else x1
        with torch.no_grad(), H.Hooks(self.net, self.read, [H.replace(self.layer, put)],
                                      stop_early=bool(self.read)) as h:
            acts = h(x)
            values = self.target.read(h.output, acts, cls)
        if values.shape[0] != variants.shape[0]:
            raise RuntimeError(f"{values.shape[0]} target values for {variants.shape[0]} activations")
        return values.double()

    def evaluate(self, x1: torch.Tensor, variants: torch.Tensor, cls=None) -> torch.Tensor:
        """Target per row of `variants` (B,), float64."""
        if self.broadcast is False:
            return self._run(x1, variants, cls, repeat=True)
        try:
            fast = self._run(x1, variants, cls, repeat=False)
        except (RuntimeError, ValueError):  # a below-layer tensor that does not broadcast (e.g. torch.cat)
            if self.broadcast:
                raise
            self.broadcast = False
            return self._run(x1, variants, cls, repeat=True)
        if self.broadcast is None:  # once per call: a few rows run on the image repeated (exact)
            k = min(4, variants.shape[0])
            exact = self._run(x1, variants[-k:], cls, repeat=True)
            scale = float(exact.abs().max().clamp_min(1.0))
            self.broadcast = bool((fast[-k:] - exact).abs().max() <= 1e-5 * scale)
            if not self.broadcast:
                return self._run(x1, variants, cls, repeat=True)
        return fast


def chunk_size(act: torch.Tensor, chunk: Optional[int], units: int) -> int:
    per = max(1, act[0].numel())
    limit = max(1, MAX_CHUNK_ELEMENTS // per)
    return max(1, min(units, chunk or 48, limit))


# ---------------------------------------------------------------- results

def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties), numpy only; nan when a side is constant."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError("spearman: arrays differ in length")
    if a.size < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = np.arange(v.size, dtype=np.float64)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


@dataclass
class AblationEffects:
    """Effects of ablating each unit on a target, per image (rows) and unit (columns).

    exact: ablated minus intact target; estimate: gradient x (ablated - actual); baseline: the
    intact target per image; classes: the class read per image (class targets)."""

    units: list
    target: Target
    mode: str
    exact: np.ndarray
    estimate_per_image: np.ndarray
    baseline: np.ndarray
    classes: Optional[np.ndarray] = None
    images: list = field(default_factory=list)
    seconds: float = 0.0
    broadcast: Optional[bool] = None

    @property
    def effect(self) -> np.ndarray:
        return self.exact.mean(0)

    @property
    def effect_std(self) -> np.ndarray:
        return self.exact.std(0) if self.exact.shape[0] > 1 else np.zeros(self.exact.shape[1])

    @property
    def estimate(self) -> np.ndarray:
        return self.estimate_per_image.mean(0)

    @property
    def rank_correlation(self) -> float:
        """Spearman correlation over units of the mean estimate and the mean exact effect."""
        return spearman(self.effect, self.estimate)

    @property
    def rank_correlation_per_image(self) -> float:
        """Mean over images of the per-image Spearman correlation (nan rows skipped)."""
        vals = [spearman(e, s) for e, s in zip(self.exact, self.estimate_per_image)]
        vals = [v for v in vals if not math.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def ranking(self, by: str = "abs") -> list[int]:
        """Unit positions ordered by |effect| (by="abs"), most negative first ("drop"), or most
        positive first ("rise")."""
        e = self.effect
        key = {"abs": -np.abs(e), "drop": e, "rise": -e}[by]
        return [int(i) for i in np.argsort(key, kind="mergesort")]


# ---------------------------------------------------------------- ablation_effects

def _units(layer_or_units, bases=None) -> tuple[str, Optional[list]]:
    if isinstance(layer_or_units, str) and ":" not in layer_or_units:
        return layer_or_units, None
    items = [layer_or_units] if isinstance(layer_or_units, (str, Unit)) else list(layer_or_units)
    units = [parse_unit(u, bases) for u in items]
    if not units:
        raise UserError("no units to ablate")
    layers = sorted({u.layer for u in units})
    if len(layers) != 1:
        raise UserError(f"units to ablate must be of one layer (given: {', '.join(layers)}); "
                        f"call once per layer")
    return layers[0], units


def _image_batches(images, model, batch_size: int):
    """(paths or None, batches of [0, 1] tensors) for a tensor, a folder or a list of paths."""
    from ..images import find_images
    from ..stream import image_batches

    if isinstance(images, torch.Tensor):
        x = images if images.dim() == 4 else images[None]
        return [f"image {i}" for i in range(x.shape[0])], (x[i:i + batch_size] for i in range(0, x.shape[0], batch_size))
    paths = find_images(images) if not isinstance(images, (list, tuple)) else list(images)
    if not paths:
        raise UserError("no images given")
    size, crop = model.input_size, model.spec.crop_pct
    seen: list = []  # the readable images, filled as batches are read (unreadable ones are skipped)

    def gen():
        for idx, b in image_batches(paths, size, crop, batch_size):
            if b is not None:
                seen.extend(str(paths[i]) for i in idx)
                yield b
    return seen, gen()


def frozen(model, layers: Sequence[str], fast: bool):
    """The network the engines run: the frozen, BN-folded copy keeping `layers` addressable."""
    if not fast or not hasattr(model, "input_size"):
        return model
    from ..capture import frozen_copy

    return frozen_copy(model, keep=[layer for layer in layers if layer])


def ablation_effects(model, layer_or_units, images, target="top1", *, mode: str = "zero", prob: bool = False,
                     reference=None, mean=None, bases=None, batch_size: int = 8, chunk: Optional[int] = None,
                     seed: int = 0, fast: bool = True, progress: bool = False, check: bool = True,
                     below: str = "auto", cache_dir=None) -> AblationEffects:
    """Exact effect on `target` of ablating each unit, per image, with the first-order estimate.

    layer_or_units: a layer name (every channel) or units of one layer (any basis, positioned or
    not). images: N x 3 x S x S in [0, 1], a folder, or paths. target: top1 | INDEX | LABEL |
    LAYER:K | Target (`prob` reads class probabilities). mode: zero | mean | resample. mean:
    reference statistics (ChannelStats / UnitMeans) or a number; else they are computed over
    `reference` images (default: `images`). resample: each image's unit takes its value on
    another image of the set (a seeded permutation without fixed points). chunk: ablated copies
    per forward. fast: run on the frozen inference copy. below: "auto" runs the part below the
    layer at batch 1 under the ablated copies (checked once per call, see the module doc);
    "repeat" runs it on the image repeated once per copy (slower, exact by construction).
    """
    import time

    from tqdm import tqdm

    if mode not in MODES:
        raise UserError(f"unknown ablation mode {mode!r} (expected one of {', '.join(MODES)})")
    start = time.perf_counter()
    layer, units = _units(layer_or_units, bases)
    target = parse_target(target, model, bases, prob)
    net = frozen(model, [layer, target.layer], fast)
    runner = LayerRunner(net, layer, target, check=check)
    if below not in ("auto", "repeat"):
        raise UserError(f"below must be 'auto' or 'repeat', not {below!r}")
    if below == "repeat":
        runner.broadcast = False
    stats = None
    if mode == "mean":
        if mean is not None:
            stats = mean
        else:
            if reference is None and isinstance(images, torch.Tensor):
                raise UserError("mean ablation of an image tensor needs `reference` images or `mean`")
            stats = reference_stats(model, reference if reference is not None else images,
                                    layer if units is None else units, cache_dir=cache_dir)
    names, batches = _image_batches(images, model, batch_size)
    sources = None
    if mode == "resample":
        all_x = torch.cat(list(batches))
        if all_x.shape[0] < 2:
            raise UserError("resample ablation needs at least 2 images")
        sources = _derangement(all_x.shape[0], seed)
        batches = (all_x[i:i + batch_size] for i in range(0, all_x.shape[0], batch_size))
        with torch.no_grad():
            src_acts = torch.cat([runner.base(b, grad=False)[0] for b in
                                  (all_x[i:i + batch_size] for i in range(0, all_x.shape[0], batch_size))])
    device = getattr(model, "mean", torch.zeros(1)).device
    exact_rows, est_rows, base_rows, cls_rows = [], [], [], []
    bar = tqdm(total=len(names) or None, desc="ablate", unit="img", disable=not progress, leave=False)
    done = 0
    for xb in batches:
        xb = xb.to(device)
        acts, values, classes, grad = runner.base(xb)
        if units is None:
            units = layer_units(layer, acts.shape[1])
        for i in range(xb.shape[0]):
            a_i = acts[i:i + 1]
            cls_i = None if classes is None else classes[i:i + 1]
            src = None if sources is None else src_acts[sources[done + i]:sources[done + i] + 1].to(a_i)
            edits = [ablation(u, mode, stats if mode == "mean" else None, src) for u in units]
            exact, est, base = _image_effects(runner, xb[i:i + 1], a_i, edits, chunk, cls_i, grad[i:i + 1])
            base_value = base if base is not None else values[i].double()
            exact_rows.append(exact)
            est_rows.append(est)
            base_rows.append(float(base_value))
            if classes is not None:
                cls_rows.append(int(classes[i]))
        done += xb.shape[0]
        bar.update(xb.shape[0])
    bar.close()
    if not exact_rows:
        raise UserError("no readable images")
    for u in units:
        if u.layer != layer:
            raise UserError(f"unit {u} is not of layer {layer}")
    return AblationEffects(units, target, mode, np.stack(exact_rows), np.stack(est_rows), np.array(base_rows),
                           np.array(cls_rows) if cls_rows else None, names[:len(exact_rows)],
                           time.perf_counter() - start, runner.broadcast)


def _image_effects(runner: LayerRunner, x1: torch.Tensor, a_i: torch.Tensor, edits, chunk: Optional[int], cls_i,
                   g_i: Optional[torch.Tensor]):
    """One image's exact effects (units x target shape, float64 numpy), first-order estimates
    (units,; zeros without `g_i`) and intact target (None when no edit changed anything)."""
    step = chunk_size(a_i, chunk, len(edits))
    state: dict = {"base": None, "exact": None}
    est = np.zeros(len(edits))
    g = g_i.double() if g_i is not None else None

    def flush(cols, rows):
        vals = runner.evaluate(x1, torch.cat(rows if state["base"] is not None else [a_i] + rows), cls_i)
        if state["base"] is None:
            state["base"], vals = vals[0], vals[1:]
            state["exact"] = np.zeros((len(edits),) + tuple(vals.shape[1:]))
        state["exact"][cols] = (vals - state["base"]).cpu().numpy()

    cols, rows = [], []
    for j, e in enumerate(edits):
        with torch.no_grad():
            v = e.fn(a_i)
        if torch.equal(v, a_i):  # nothing changes (a dead channel): the effect is exactly 0
            continue
        if g is not None:
            est[j] = float(((v - a_i).double() * g).sum())
        cols.append(j)
        rows.append(v)
        if len(rows) == step:
            flush(cols, rows)
            cols, rows = [], []
    if rows:
        flush(cols, rows)
    exact = state["exact"] if state["exact"] is not None else np.zeros(len(edits))
    return exact, est, state["base"]


@dataclass
class ClassEffects:
    """What ablating each unit does to every class: `delta[u, c]` is the mean over images of
    (ablated minus intact) class-c probability (logit when `prob` is False); `baseline[c]` the
    mean intact value."""

    units: list
    mode: str
    delta: np.ndarray
    baseline: np.ndarray
    images: list = field(default_factory=list)
    prob: bool = True
    seconds: float = 0.0

    def top(self, unit_pos: int, n: int, sign: str = "drop") -> list[tuple[int, float]]:
        """(class, change) of the n classes whose value falls ("drop") or rises ("rise") most."""
        d = self.delta[unit_pos]
        order = np.argsort(d if sign == "drop" else -d, kind="mergesort")[:n]
        return [(int(c), float(d[c])) for c in order if (d[c] < 0 if sign == "drop" else d[c] > 0)]


def class_effects(model, layer_or_units, images, *, mode: str = "mean", prob: bool = True, reference=None,
                  mean=None, bases=None, batch_size: int = 8, chunk: Optional[int] = None, fast: bool = True,
                  progress: bool = False, cache_dir=None) -> ClassEffects:
    """The exact change of every class's probability (logit without `prob`) when each unit is
    ablated, averaged over `images`: what a unit does for the model's output. The same engine
    as `ablation_effects` (one forward of the layer's input per image, all ablated copies above
    it); mode zero | mean (reference statistics from `mean`, or over `reference`, default the
    images themselves)."""
    import time

    from tqdm import tqdm

    if mode not in ("zero", "mean"):
        raise UserError(f"class effects support zero and mean ablation, not {mode!r}")
    start = time.perf_counter()
    layer, units = _units(layer_or_units, bases)
    target = Target("all", prob=prob)
    net = frozen(model, [layer], fast)
    runner = LayerRunner(net, layer, target)
    stats = None
    if mode == "mean":
        stats = mean if mean is not None else reference_stats(
            model, reference if reference is not None else images, layer if units is None else units,
            cache_dir=cache_dir)
    names, batches = _image_batches(images, model, batch_size)
    device = getattr(model, "mean", torch.zeros(1)).device
    total, base_total, n = None, None, 0
    bar = tqdm(total=len(names) or None, desc="class effects", unit="img", disable=not progress, leave=False)
    for xb in batches:
        xb = xb.to(device)
        acts, values, _, _ = runner.base(xb, grad=False)
        if units is None:
            units = layer_units(layer, acts.shape[1])
        for i in range(xb.shape[0]):
            edits = [ablation(u, mode, stats) for u in units]
            exact, _, _ = _image_effects(runner, xb[i:i + 1], acts[i:i + 1], edits, chunk, None, None)
            if exact.ndim == 1:  # no edit changed anything on this image
                exact = np.zeros((len(units), values.shape[1]))
            total = exact if total is None else total + exact
            b = values[i].double().cpu().numpy()
            base_total = b if base_total is None else base_total + b
            n += 1
        bar.update(xb.shape[0])
    bar.close()
    if not n:
        raise UserError("no readable images")
    return ClassEffects(units, mode, total / n, base_total / n, names[:n], prob, time.perf_counter() - start)


def _derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of 0..n-1 with no fixed point (each image takes another's value)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    # a cyclic shift along a random order has no fixed point
    out = [0] * n
    for k in range(n):
        out[perm[k]] = perm[(k + 1) % n]
    return out


def naive_effects(model, units: Sequence[Unit], x: torch.Tensor, target="top1", *, mode: str = "zero",
                  mean=None, sources: Optional[torch.Tensor] = None, prob: bool = False) -> np.ndarray:
    """The slow reference: one full forward per image and ablated unit (for tests and benchmarks).
    Returns images x units (ablated minus intact)."""
    target = parse_target(target, model, None, prob)
    read = [target.layer] if target.kind == "unit" else []
    out = np.zeros((x.shape[0], len(units)))
    with torch.no_grad():
        for i in range(x.shape[0]):
            xi = x[i:i + 1]
            if read:
                with H.Hooks(model, read, stop_early=False) as h:
                    acts = h(xi)
                    logits = h.output
            else:
                acts, logits = {}, model(xi)
            classes = target.classes(logits, 1)
            base = float(target.read(logits, acts, classes)[0])
            for j, u in enumerate(units):
                src = None if sources is None else sources[i:i + 1]
                edit = ablation(u, mode, mean, src)
                with H.Hooks(model, read, [edit], stop_early=False) as h:
                    acts = h(xi)
                out[i, j] = float(target.read(h.output, acts, classes)[0]) - base
    return out


__all__ = ["AblationEffects", "ClassEffects", "LayerRunner", "ablation_effects", "class_effects", "naive_effects",
           "spearman"]
