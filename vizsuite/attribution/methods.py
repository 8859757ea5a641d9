"""One contract for every attribution method: `attribute(model, inputs, target, method, **options)`.

Path and gradient methods wrap captum; LRP wraps zennit (see lrp.py). Each call returns an
`Attribution`: the attribution (rows x C x H x W at the model's input resolution), the model
output, the targets (one row per image and target), the method with its resolved parameters,
and a check (integrated gradients: completeness delta; LRP: relevance conservation).

Spaces: inputs are RGB in [0, 1]. Saliency, integrated gradients, SmoothGrad and Grad-CAM are
taken w.r.t. that input. Gradient x input and LRP are taken at the input the network sees,
z = (x - mean) / std (z * dF/dz, the form for which LRP-0 equals gradient x input); both are
per-pixel maps aligned with x.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..capture import inference_copy
from ..errors import UserError, close_matches
from ..hooks import Hooks, resolve
from ..zoo.spec import VisionModel
from .targets import Target, TargetSpec, parse_target, resolve_targets

# Gauss-Legendre, 256 nodes first; rows whose completeness delta is over 1% of
# |f(x) - f(baseline)| are redone with doubled steps up to 4 x 256 (see _integrated_gradients).
# Measured on efficientnet_lite0, black baseline, 224 px: the shared photos are at most 1.4% at
# 128 steps; chelsea needs 512 (0.45%). Riemann sums are several times worse at equal steps.
DEFAULT_IG_STEPS = 256
DEFAULT_IG_MAX_DELTA = 0.01
DEFAULT_IG_MAX_STEPS = None  # None: 4 x steps (two doublings at most)
# Path points per forward/backward: bounds memory (about 60 MB per 224 px point for
# efficientnet_lite0) while keeping batches large enough for CPU efficiency.
DEFAULT_INTERNAL_BATCH = 16


@dataclass
class Check:
    """A sanity number for an attribution, per row.

    completeness_delta: value = |sum(attr) - (f(x) - f(b))| / |f(x) - f(b)| (integrated gradients).
    conservation: value = sum(relevance) / target value (LRP; 1.0 is perfect conservation).
    """

    name: str
    values: list[float]
    detail: list[dict] = field(default_factory=list)

    @property
    def value(self) -> float:
        """The worst row: largest delta, or the conservation ratio farthest from 1."""
        if self.name == "conservation":
            return max(self.values, key=lambda v: abs(v - 1.0))
        return max(self.values)

    def as_dict(self, row: Optional[int] = None) -> dict:
        if row is None:
            return {"name": self.name, "value": self.value, "values": self.values}
        return {"name": self.name, "value": self.values[row], **(self.detail[row] if self.detail else {})}


@dataclass
class Attribution:
    """Result of `attribute`: rows are (image, target) pairs, image-major."""

    attribution: torch.Tensor          # rows x C x H x W
    output: Optional[torch.Tensor]     # N x classes model output (logits) for the inputs
    targets: list[Target]
    scores: torch.Tensor               # per row: the explained value (logit or unit value)
    method: str
    params: dict
    check: Optional[Check] = None
    seconds: float = 0.0
    inputs: Optional[torch.Tensor] = None  # N x C x H x W in [0, 1]: the images explained

    def __len__(self) -> int:
        return len(self.targets)

    def overlay(self, row: int = 0):
        """H x W x 3 uint8: row's heatmap over its (dimmed) input image."""
        from .heatmap import overlay

        image = self.inputs[self.targets[row].image].detach().float().cpu().permute(1, 2, 0).numpy()
        return overlay(image, self.heatmap(row))

    # notebooks (docs/notebook.md): heatmap overlays show themselves in a cell
    def _repr_png_(self) -> Optional[bytes]:
        from ..display import png_bytes

        return png_bytes(self.overlay(0)) if self.inputs is not None and len(self) else None

    def _repr_html_(self) -> Optional[str]:
        from ..display import grid_html

        if self.inputs is None or not len(self):
            return None
        caps = [f"image {t.image}: {t} ({float(self.scores[r]):.3g})" for r, t in enumerate(self.targets)]
        return grid_html([self.overlay(r) for r in range(len(self))], caps, title=f"{self.method}", px=160)

    def heatmap(self, row: int = 0):
        """H x W numpy map (attribution summed over channels) of one row."""
        return self.attribution[row].detach().float().sum(0).cpu().numpy()

    def rows_for(self, image: int) -> list[int]:
        return [r for r, t in enumerate(self.targets) if t.image == image]


# ---------------------------------------------------------------- helpers

def split_model(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """(network, normalization) of a VisionModel; a plain module gets the identity."""
    if isinstance(model, VisionModel):
        return model.net, model.normalize
    return model, (lambda x: x)


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model (inputs follow it, so float64 models stay exact)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def _bounds(model: nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[0, 1] mapped into the network's input space (ZBox low/high), per channel (1 x C x 1 x 1).

    Per channel rather than full size: zennit broadcasts them to the first layer's actual input,
    which can be larger than the image (Inception v1 pads before its first convolution).
    """
    if isinstance(model, VisionModel):
        low, high = (0.0 - model.mean) / model.std, (1.0 - model.mean) / model.std
    else:
        low, high = torch.zeros(1, like.shape[1], 1, 1), torch.ones(1, like.shape[1], 1, 1)
    return low.to(like), high.to(like)


def _unit_forward(model: nn.Module, unit, space: str = "x"):
    """f(input) -> the unit's value per row; runs the network only up to the unit's layer."""
    net, normalize = split_model(model)

    def forward(inp: torch.Tensor) -> torch.Tensor:
        with Hooks(net, [unit.layer], stop_early=True) as cap:
            acts = cap(normalize(inp) if space == "x" else inp)
        return unit.value(acts[unit.layer])

    return forward


def _forward_for(model, spec: TargetSpec, space: str = "x"):
    if spec.kind == "unit":
        return _unit_forward(model, spec.unit, space)
    if space == "x":
        return model
    return split_model(model)[0]


def _captum_target(rows: list[Target]):
    return None if rows[0].kind == "unit" else [t.index for t in rows]


def _logits(model: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return out.detach() if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def _scores(model, x_rows: torch.Tensor, rows: list[Target], logits: Optional[torch.Tensor]) -> torch.Tensor:
    if rows[0].kind == "unit":
        with torch.no_grad():
            return _unit_forward(model, rows[0].unit)(x_rows).detach().float()
    return torch.stack([logits[t.image, t.index] for t in rows]).float()


def _expand(x: torch.Tensor, rows: list[Target]) -> torch.Tensor:
    return x[[t.image for t in rows]]


# ---------------------------------------------------------------- methods
# Each method: fn(model, x, spec, rows, logits, opts) -> (attribution rows x C x H x W, check | None)
# `rows` is None only for methods that resolve targets themselves (LRP, from its own forward).

def _saliency(model, x, spec, rows, logits, opts):
    from captum.attr import Saliency

    xr = _expand(x, rows)
    attr = Saliency(_forward_for(model, spec)).attribute(xr, target=_captum_target(rows), abs=bool(opts["abs"]))
    return attr.detach(), None


def _gradient_x_input(model, x, spec, rows, logits, opts):
    from captum.attr import InputXGradient

    _, normalize = split_model(model)
    zr = normalize(_expand(x, rows)).detach()
    attr = InputXGradient(_forward_for(model, spec, "z")).attribute(zr, target=_captum_target(rows))
    return attr.detach(), None


def make_baseline(kind, x: torch.Tensor, *, sigma: Optional[float] = None,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """IG baseline in [0, 1]: 'black'/'zero', 'blur' (Gaussian, sigma px), 'noise' (uniform), or a tensor."""
    if isinstance(kind, torch.Tensor):
        return kind.to(x).expand_as(x)
    if isinstance(kind, (int, float)) and not isinstance(kind, bool):
        return torch.full_like(x, float(kind))
    if kind in ("black", "zero", "zeros"):
        return torch.zeros_like(x)
    if kind == "white":
        return torch.ones_like(x)
    if kind in ("blur", "blurred"):
        from torchvision.transforms.functional import gaussian_blur

        s = float(sigma) if sigma else max(1.0, min(x.shape[-2:]) / 14.0)
        k = 2 * math.ceil(3 * s) + 1
        k = min(k, 2 * (min(x.shape[-2:]) // 2) - 1)  # reflect padding needs kernel < 2 x size
        return gaussian_blur(x, [k, k], [s, s])
    if kind in ("noise", "uniform", "random"):
        return torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    raise UserError(f"unknown IG baseline {kind!r}; choose black, blur, noise (or a number/tensor)")


def _generator(seed) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def _ig_pass(forward, model, xr, br, baseline, rows, logits, steps, integration, ibs):
    from captum.attr import IntegratedGradients

    attr = IntegratedGradients(forward).attribute(
        xr, baselines=br, target=_captum_target(rows), n_steps=steps, method=integration,
        internal_batch_size=max(ibs, len(rows)))
    # f(x) is known already, so only the baselines need a forward (captum's
    # return_convergence_delta would run both again)
    with torch.no_grad():
        if rows[0].kind == "unit":
            fx, fb = forward(xr), forward(br)
        else:
            images = sorted({t.image for t in rows})
            fb_img = dict(zip(images, model(baseline[images])))
            fx = torch.stack([logits[t.image, t.index] for t in rows])
            fb = torch.stack([fb_img[t.image][t.index] for t in rows])
    diff = (fx.double() - fb.double()).cpu()
    total = attr.detach().double().flatten(1).sum(1).cpu()
    return attr.detach(), diff, total


def _integrated_gradients(model, x, spec, rows, logits, opts):
    steps = int(opts["steps"])
    if steps < 1:
        raise UserError("IG steps must be at least 1")
    ibs = int(opts["internal_batch_size"] or DEFAULT_INTERNAL_BATCH)
    if ibs < 1:
        raise UserError("internal_batch_size must be at least 1")
    baseline = make_baseline(opts["baseline"], x, sigma=opts["blur_sigma"], generator=_generator(opts["seed"]))
    xr, br = _expand(x, rows), _expand(baseline, rows)
    forward = _forward_for(model, spec)
    attr, diff, total = _ig_pass(forward, model, xr, br, baseline, rows, logits, steps, opts["integration"], ibs)
    used = [steps] * len(rows)
    # Why more than captum: on real photos the logit can rise within a few percent of the path
    # (efficientnet_lite0 / chelsea, black baseline: ~10 logits between alpha 0.015 and 0.05), and
    # a fixed Gauss-Legendre rule misses it (delta 6% at 128 steps, 2.3% at 256, 0.45% at 512).
    # Rows whose completeness delta exceeds `max_delta` are recomputed with twice the steps,
    # up to `max_steps` (default 4 x steps); other rows cost nothing extra. max_delta=None: off.
    limit, cap = opts["max_delta"], int(opts["max_steps"] or 4 * steps)
    while limit is not None:
        rel = (total - diff).abs() / diff.abs().clamp_min(1e-12)
        redo = [r for r in range(len(rows)) if rel[r] > limit and used[r] * 2 <= cap]
        if not redo:
            break
        n = used[redo[0]] * 2
        sub = [rows[r] for r in redo]
        a, d, t = _ig_pass(forward, model, xr[redo], br[redo], baseline, sub, logits, n, opts["integration"], ibs)
        attr[redo], diff[redo], total[redo] = a, d, t
        for r in redo:
            used[r] = n
    delta = total - diff
    rel = (delta.abs() / diff.abs().clamp_min(1e-12)).tolist()
    detail = [{"delta": float(d), "difference": float(f), "attribution_sum": float(s), "steps": u}
              for d, f, s, u in zip(delta, diff, total, used)]
    return attr, Check("completeness_delta", rel, detail)


def _smoothgrad(model, x, spec, rows, logits, opts):
    # Our own loop rather than captum's NoiseTunnel: NoiseTunnel only wraps captum attributions,
    # and SmoothGrad over LRP (zennit) is as useful as over gradients.
    base = resolve_method(opts["base"])
    if base == "smoothgrad":
        raise UserError("smoothgrad cannot wrap itself")
    base_opts = _options(base, opts["base_options"])
    g = _generator(opts["seed"])
    sigma = float(opts["sigma"])
    total = None
    for _ in range(int(opts["samples"])):
        noisy = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        fixed = TargetSpec("unit", unit=spec.unit) if spec.kind == "unit" else \
            TargetSpec("per_row", indices=tuple(t.index for t in rows))
        attr, _ = _run_rows(model, noisy, base, fixed, rows, logits, base_opts)
        total = attr if total is None else total + attr
    return total / int(opts["samples"]), None


def default_cam_layer(net: nn.Module, z: torch.Tensor) -> str:
    """The last module (in completion order) with a spatial output larger than 1 x 1."""
    names = [n for n, _ in net.named_modules() if n]
    with Hooks(net, names, stop_early=False, detach=True, strict=False) as cap, torch.no_grad():
        cap(z[:1])
        # completion order: a module's first call is recorded when it returns
        done = [n for n, a in cap.activations.items()
                if isinstance(a, torch.Tensor) and a.dim() == 4 and min(a.shape[2:]) > 1]
    if not done:
        raise UserError("no spatial layer found for Grad-CAM; pass layer=NAME")
    return done[-1]


def _gradcam(model, x, spec, rows, logits, opts):
    from captum.attr import LayerAttribution, LayerGradCam

    net, normalize = split_model(model)
    layer = opts["layer"] or (spec.unit.layer if spec.kind == "unit" else default_cam_layer(net, normalize(x)))
    module = resolve(net, layer, "Grad-CAM layer")
    xr = _expand(x, rows)
    cam = LayerGradCam(_forward_for(model, spec), module).attribute(
        xr, target=_captum_target(rows), relu_attributions=bool(opts["relu"]))
    if cam.dim() != 4:
        raise UserError(f"Grad-CAM layer {layer} has no spatial output (shape {tuple(cam.shape[1:])})")
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    opts["layer"] = layer
    # spread over channels so that the channel sum (the heatmap) is the CAM itself
    return (cam / x.shape[1]).expand(-1, x.shape[1], -1, -1).detach().contiguous(), None


def _lrp(model, x, spec, rows, logits, opts):
    from .lrp import build_composite, composite_key, verify_canonizers

    net, normalize = split_model(model)
    z = normalize(x).detach()
    low, high = _bounds(model, z) if opts["low"] is None else (opts["low"], opts["high"])
    composite = build_composite(opts["composite"], net, low=low, high=high, rules=opts["rules"],
                                epsilon=opts["epsilon"], gamma=opts["gamma"], stabilizer=opts["stabilizer"],
                                canonizers=opts["canonizers"],
                                keep=[resolve(net, spec.unit.layer)] if spec.kind == "unit" else ())
    verify_canonizers(net, z, composite.canonizers)
    z.requires_grad_(True)
    out_logits = None
    try:
        composite.register(net)
        if spec.kind == "unit":
            with Hooks(net, [spec.unit.layer], stop_early=True) as cap:
                act = cap(z)[spec.unit.layer]
            rows = resolve_targets(model, spec, None, x.shape[0])
            seeds = [spec.unit.gradient(act) * act.detach()]
            heads = [act]
            per_image = 1
        else:
            out = net(z)
            out_logits = out.detach()
            if spec.kind != "per_row":  # (re)resolve against the real output: top-k, index range
                rows = resolve_targets(model, spec, out_logits, x.shape[0])
            per_image = len(rows) // x.shape[0]
            seeds, heads = [], []
            for j in range(per_image):  # one backward per rank: k passes over one forward
                seed = torch.zeros_like(out)
                for i in range(x.shape[0]):
                    c = rows[i * per_image + j].index
                    seed[i, c] = out_logits[i, c]  # relevance starts as the target logit
                seeds.append(seed)
                heads.append(out)
        rel = torch.empty((len(rows),) + tuple(z.shape[1:]), dtype=z.dtype, device=z.device)
        for j, (head, seed) in enumerate(zip(heads, seeds)):
            (grad,) = torch.autograd.grad(head, z, grad_outputs=seed, retain_graph=j < len(seeds) - 1)
            rel[j::per_image] = grad
    finally:
        composite.remove()
    if not opts["composite"].startswith("custom"):
        opts["composite"] = composite_key(opts["composite"])
    return rel.detach(), ("lrp", rows, out_logits)


def _lrp_check(rel: torch.Tensor, scores: torch.Tensor) -> Check:
    sums = rel.double().flatten(1).sum(1)
    values = scores.double()
    denom = torch.where(values.abs() > 1e-12, values, torch.full_like(values, 1e-12))
    ratio = (sums / denom).tolist()
    detail = [{"relevance_sum": float(s), "target_value": float(v)} for s, v in zip(sums, scores.double())]
    return Check("conservation", ratio, detail)


# ---------------------------------------------------------------- registry and driver

_IMPLS: dict[str, Callable] = {
    "saliency": _saliency,
    "gradient_x_input": _gradient_x_input,
    "integrated_gradients": _integrated_gradients,
    "smoothgrad": _smoothgrad,
    "gradcam": _gradcam,
    "lrp": _lrp,
}
METHODS = tuple(_IMPLS)
ALIASES = {
    "gradient": "saliency", "grad": "saliency",
    "gxi": "gradient_x_input", "gradxinput": "gradient_x_input", "input_x_gradient": "gradient_x_input",
    "inputxgradient": "gradient_x_input", "gradient_input": "gradient_x_input",
    "ig": "integrated_gradients", "integratedgradients": "integrated_gradients",
    "sg": "smoothgrad", "smooth_grad": "smoothgrad", "noise_tunnel": "smoothgrad",
    "grad_cam": "gradcam", "layergradcam": "gradcam",
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "saliency": {"abs": True},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": DEFAULT_IG_STEPS, "baseline": "black", "integration": "gausslegendre",
                             "internal_batch_size": None, "blur_sigma": None, "seed": 0,
                             "max_delta": DEFAULT_IG_MAX_DELTA, "max_steps": DEFAULT_IG_MAX_STEPS},
    "smoothgrad": {"base": "saliency", "samples": 16, "sigma": 0.15, "seed": 0},
    "gradcam": {"layer": None, "relu": True},
    "lrp": {"composite": "epsilon_plus_flat", "rules": None, "epsilon": None, "gamma": None, "stabilizer": None,
            "canonizers": "auto", "low": None, "high": None},
}


def resolve_method(name: str) -> str:
    """Canonical method name from a name or alias; UserError with suggestions when unknown."""
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in _IMPLS:
        raise UserError(f"unknown attribution method {name!r}{close_matches(key, list(_IMPLS) + list(ALIASES))}; "
                        f"choose from {', '.join(METHODS)}")
    return key


def _options(method: str, options: dict) -> dict:
    defaults = _DEFAULTS[method]
    opts = dict(defaults)
    extra = {k: v for k, v in options.items() if k not in defaults}
    if method == "smoothgrad":
        base = resolve_method(options.get("base", defaults["base"]))
        if base == "smoothgrad":
            raise UserError("smoothgrad cannot wrap itself")
        bad = [k for k in extra if k not in _DEFAULTS[base]]
        opts["base_options"] = {k: v for k, v in extra.items() if k in _DEFAULTS[base]}
    else:
        bad = list(extra)
    if bad:
        raise UserError(f"unknown option(s) {', '.join(sorted(bad))} for method {method} "
                        f"(known: {', '.join(defaults) or 'none'})")
    opts.update({k: v for k, v in options.items() if k in defaults})
    return opts


# Gradient methods that run the network many times per call (IG, SmoothGrad over a gradient
# method) run on `inference_copy(model)`: frozen weights, batch norms folded, channels_last. The
# copy costs about two forward passes and then saves 15-30 % of every pass; single-pass methods
# keep the model as it is. LRP keeps it too: its canonizers do their own folding.
_GRADIENT_METHODS = ("saliency", "gradient_x_input", "integrated_gradients")


def _fast_model(model: nn.Module, x: torch.Tensor, name: str, spec: TargetSpec, opts: dict) -> nn.Module:
    base = resolve_method(opts["base"]) if name == "smoothgrad" else None
    if name != "integrated_gradients" and base not in _GRADIENT_METHODS:
        return model
    if spec.kind == "unit":
        return inference_copy(model, x[:1], keep=[spec.unit.layer], output=False)
    return inference_copy(model, x[:1])


def _run_rows(model, x, method, spec, rows, logits, opts):
    result = _IMPLS[method](model, x, spec, rows, logits, opts)
    attr, check = result
    return attr, (None if isinstance(check, tuple) else check)


def attribute(model: nn.Module, inputs: torch.Tensor, target="top1", method: str = "saliency",
              **options) -> Attribution:
    """Attribute `target` for `inputs` (N x C x H x W in [0, 1], or C x H x W) with `method`.

    target: class index, label, 'topK', a list of indices (one per image), a `units.Unit` or its
    text 'LAYER:K[@Y,X]' / 'LAYER/BASIS:K' (docs/units.md; pass `bases={NAME: Basis}`).
    method: saliency | gradient_x_input | integrated_gradients | smoothgrad | gradcam | lrp
    (aliases ig, gxi, sg, grad_cam). Options per method, e.g. steps/baseline/internal_batch_size
    (ig), base/samples/sigma (smoothgrad, plus the base method's options), layer (gradcam),
    composite/rules/epsilon/gamma/canonizers (lrp).
    """
    name = resolve_method(method)
    bases = options.pop("bases", None)  # NAME -> Basis for `LAYER/BASIS:K` targets
    opts = _options(name, options)
    spec = parse_target(target, bases)
    if not isinstance(inputs, torch.Tensor):
        raise UserError("inputs must be a tensor N x C x H x W in [0, 1]")
    x = inputs.unsqueeze(0) if inputs.dim() == 3 else inputs
    if x.dim() != 4:
        raise UserError(f"inputs must be N x C x H x W, got shape {tuple(inputs.shape)}")
    device, dtype = _placement(model)
    x = x.detach().to(device, dtype)
    start = time.perf_counter()
    if name == "lrp":
        rows = None
        if spec.kind not in ("top", "unit"):  # resolve (and validate) before any heavy work
            rows = resolve_targets(model, spec, None, x.shape[0])
        attr, (_, rows, logits) = _lrp(model, x, spec, rows, None, opts)
        if logits is None:
            logits = _logits(model, x)
        scores = _scores(model, _expand(x, rows), rows, logits)
        check = _lrp_check(attr, scores)
    else:
        logits = _logits(model, x)
        if spec.kind == "unit":
            _unit_forward(model, spec.unit)(x[:1])  # validates the layer and unit early
        rows = resolve_targets(model, spec, logits, x.shape[0])
        attr, check = _run_rows(_fast_model(model, x, name, spec, opts), x, name, spec, rows, logits, opts)
        scores = _scores(model, _expand(x, rows), rows, logits)
    params = {k: _jsonable(v) for k, v in opts.items() if k not in ("low", "high") or v is not None}
    return Attribution(attribution=attr, output=logits, targets=rows, scores=scores.detach(), method=name,
                       params=params, check=check, seconds=time.perf_counter() - start, inputs=x.detach())


def _jsonable(v):
    if isinstance(v, torch.Tensor):
        return f"tensor{tuple(v.shape)}"
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return type(v).__name__
