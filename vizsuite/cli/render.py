"""`vizsuite render MODEL UNIT [UNIT ...] -o DIR`: feature visualizations as PNGs + manifest.json.

UNIT is `LAYER:INDEX` (a channel), `LAYER:INDEX@Y,X` (one neuron), `LAYER` (for
--objective layer / direction) or a class index or label (for --objective class / logprob).
Everything is validated before the (long) optimization starts.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..errors import UserError, first_line
from ..limits import check_size
from .common import (add_basis_arg, add_model_args, add_quiet, bases_from_args, check_output, check_units,
                     model_from_args)

OBJECTIVES = ("channel", "neuron", "direction", "layer", "class", "logprob")


def register(sub) -> None:
    p = sub.add_parser("render", help="feature visualization: images that excite units",
                       description="Optimize images that maximize units, layers, directions or classes "
                                   "(fft + decorrelated colour + robust transforms by default).")
    add_model_args(p)
    add_basis_arg(p)
    p.add_argument("units", nargs="+", metavar="UNIT",
                   help="LAYER:INDEX, LAYER:INDEX@Y,X, LAYER (layer/direction), or a class index/label "
                        "(class/logprob)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--objective", choices=OBJECTIVES, default=None,
                   help="what to maximize (default: neuron for LAYER:I@Y,X, channel otherwise)")
    p.add_argument("--vector", metavar="FILE", help="direction vector (.npy, .pt or text) for --objective direction")
    p.add_argument("--steps", type=int, default=512, metavar="N", help="optimization steps (default 512)")
    p.add_argument("--size", type=int, default=None, metavar="PX", help="image size (default: model input size)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--param", choices=("fft", "pixel"), default="fft", help="image basis (default fft)")
    p.add_argument("--decay-power", type=float, default=1.0, metavar="P",
                   help="fft spectrum scaled by 1/f^P (default 1; higher = smoother)")
    p.add_argument("--no-decorrelate", action="store_true", help="optimize raw RGB, not decorrelated colour")
    p.add_argument("--transforms", choices=("standard", "lucid", "none"), default="standard",
                   help="robustness transforms (default standard)")
    p.add_argument("--alpha", action="store_true", help="RGBA image; transparent = does not matter")
    p.add_argument("--alpha-penalty", type=float, default=0.2, metavar="W",
                   help="with --alpha: weight of mean opacity, relative to the objective (default 0.2)")
    p.add_argument("--diversity", type=int, default=1, metavar="K", help="K diverse images per unit (default 1)")
    p.add_argument("--diversity-weight", type=float, default=0.5, metavar="W",
                   help="weight of the diversity penalty, relative to the objective (default 0.5)")
    p.add_argument("--negative", action="store_true", help="minimize instead of maximize")
    p.add_argument("--batch-size", type=int, default=8, metavar="B",
                   help="units optimized together in one batch (default 8)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="model precision: auto (default) = bf16 where the device computes it "
                        "natively (CPUs with AVX512-BF16/AMX, bf16 GPUs), else fp32 (on a CPU also for "
                        "models with depthwise convolutions, where bf16 measured no gain); fp32 is the "
                        "bit-reproducible reference; the image and optimizer stay fp32")
    p.add_argument("--relu-grad", choices=("redirect", "leaky", "exact"), default=None,
                   help="gradient through ReLU/ReLU6 layers: redirect (Lucid's: where an image's "
                        "gradient dies at a layer, pass it through towards the active range), leaky "
                        "(torch-lucent's InceptionV1: 0.1 x through inactive inputs) or exact "
                        "(default: the model's; leaky for inceptionv1, redirect otherwise)")
    add_quiet(p)
    p.set_defaults(func=run)


def _check_numbers(args) -> None:
    if args.steps < 1:
        raise UserError("--steps must be at least 1")
    if args.size is not None and args.size < 16:
        raise UserError("--size must be at least 16")
    if args.size is not None:
        check_size(args.size, "--size")
    if args.diversity < 1:
        raise UserError("--diversity must be at least 1")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.lr <= 0:
        raise UserError("--lr must be positive")
    if args.objective == "direction" and not args.vector:
        raise UserError("--objective direction needs --vector FILE")
    if args.vector and args.objective != "direction":
        raise UserError("--vector only goes with --objective direction")


def _load_vector(path: str):
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserError(f"vector file not found: {path}")
    try:
        if p.suffix == ".npy":
            v = np.load(p)
        elif p.suffix in (".pt", ".pth"):
            v = torch.load(p, map_location="cpu", weights_only=True)
        else:
            v = np.loadtxt(p, delimiter="," if "," in p.read_text()[:1000] else None)
    except Exception as exc:
        raise UserError(f"cannot read vector {path}: {first_line(exc, 120)}") from None
    try:
        v = torch.as_tensor(np.asarray(v, dtype=np.float32)).flatten()
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot read vector {path}: {first_line(exc, 120)}") from None
    if not bool(torch.isfinite(v).all()):
        raise UserError(f"vector {path} holds non-finite values (NaN/inf)")
    if v.numel() == 0 or not bool(v.abs().sum() > 0):
        raise UserError(f"vector {path} is all zeros: a direction needs a non-zero vector")
    return v


def _targets(args, model):
    """Validate every UNIT against the model; return [(target dict, objective factory)]."""
    from ..capture import list_layers
    from ..optvis import objectives as O
    from ..units import Unit, check_unit

    kind = args.objective
    out = []
    if kind in ("class", "logprob"):
        n = len(model.labels)
        for text in args.units:
            idx = int(text) if re.fullmatch(r"-?\d+", text.strip()) else model.class_index(text)
            if not 0 <= idx < n:
                raise UserError(f"class {idx} out of range for model {model.name} ({n} classes)")
            make = O.class_logit if kind == "class" else O.class_logprob
            out.append(({"layer": "logits", "unit": str(idx), "label": model.label(idx)},
                        lambda b, i=idx, make=make: make(i, batch=b)))
        return out
    bases = bases_from_args(args)
    # the model always sees its input size (render resizes); only the named layers are listed
    # (a truncated forward), unless one is unknown: then the full listing names close matches
    layers = list_layers(model, only=_layer_names(args.units, bases))
    if len(layers) < len(_layer_names(args.units, bases)):
        layers = list_layers(model)
    vector = _load_vector(args.vector) if kind == "direction" else None
    for text in args.units:
        if kind in ("layer", "direction") and ":" not in text:
            info = check_unit(Unit(text.strip(), 0), layers)
            if kind == "direction" and vector.numel() != info.channels:
                raise UserError(f"--vector has {vector.numel()} values, layer {info.name} has {info.channels} channels")
            name = info.name
            if kind == "layer":
                out.append(({"layer": name, "unit": None}, lambda b, n=name: O.layer(n, batch=b)))
            else:
                out.append(({"layer": name, "unit": "direction"},
                            lambda b, n=name: O.direction(n, vector, batch=b)))
            continue
        ((unit, info),) = check_units(model, [text], bases, layers)
        k = kind or ("neuron" if unit.y is not None else "channel")
        if k in ("layer", "direction"):
            raise UserError(f"--objective {k} takes a LAYER, not a unit ({text})")
        if k == "channel" and unit.y is not None:
            raise UserError(f"--objective channel takes LAYER:INDEX, not a position ({text}); use --objective neuron")
        if k == "neuron" and len(info.shape) != 3:
            raise UserError(f"layer {unit.layer} has no spatial positions for --objective neuron")
        if not unit.is_channel:  # a feature of a basis: its value (mean, or at @Y,X)
            make = lambda b, u=unit: O.unit(u if k != "neuron" or u.y is not None else u.reduced("center"), batch=b)
        elif k == "neuron":
            make = lambda b, u=unit: O.neuron(u.layer, u.channel, u.y, u.x, batch=b)
        else:
            make = lambda b, u=unit: O.channel(u.layer, u.channel, batch=b)
        out.append(({"layer": unit.layer, "unit": str(unit)}, make))
    return out


def _layer_names(texts, bases) -> list[str]:
    from ..units import parse_unit

    names = []
    for text in texts:
        try:
            names.append(parse_unit(text, bases).layer if ":" in text else text.strip())
        except Exception:  # noqa: BLE001 - a bad unit: the full validation below says why
            names.append(text.strip())
    return list(dict.fromkeys(names))


def _filename(target: dict, negative: bool, k: int, kk: int) -> str:
    base = target["unit"] if target["unit"] and target["unit"] != "direction" else target["layer"]
    if target["unit"] == "direction":
        base = f"{target['layer']}_direction"
    if target["layer"] == "logits":
        base = f"class_{target['unit']}"
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_")
    return f"{base}{'_neg' if negative else ''}{f'_{k}' if kk > 1 else ''}.png"


def run(args) -> int:
    _check_numbers(args)
    check_output(args.out)
    import torch

    from ..fileio import write_manifest
    from ..images import save_png
    from ..optvis import objectives as O
    from ..optvis import ImageParam, evaluate, render
    from ..optvis.render import default_relu_grad

    model = model_from_args(args)
    targets = _targets(args, model)  # all validation happens before the long job
    relu_grad = args.relu_grad or default_relu_grad(model)
    out_dir = Path(args.out)
    size = args.size or model.input_size
    sign = -1.0 if args.negative else 1.0
    kdiv = args.diversity

    # jobs: each job is a batch of images; with --diversity K a unit fills K images of its own
    # render call (diversity is a batch-wide penalty), otherwise units are batched together.
    if kdiv > 1:
        jobs = [[(t, k) for k in range(kdiv)] for t in targets]
    else:
        flat = [(t, 0) for t in targets]
        jobs = [flat[i:i + args.batch_size] for i in range(0, len(flat), args.batch_size)]

    items, used = [], set()
    for job in jobs:
        generator = torch.Generator().manual_seed(args.seed)
        parts = [make(None) for (target, make), _ in job]
        parts = [-p if args.negative else p for p in parts]
        if kdiv > 1:
            objective = parts[0]
        else:
            objective = O.per_image(parts) if len(parts) > 1 else parts[0]
        penalties = []
        if kdiv > 1:
            layer = job[0][0][0]["layer"]
            if layer != "logits":
                penalties.append(("diversity", O.diversity(layer), args.diversity_weight))
        if args.alpha:
            penalties.append(("alpha", O.alpha_mean(), args.alpha_penalty))
        full = objective
        if penalties:
            # penalties are scaled by the objective's typical size (measured once on the start
            # image) so one weight works for units of very different activation ranges
            param0 = ImageParam(size, len(job), alpha=args.alpha, generator=torch.Generator().manual_seed(args.seed))
            scale = float(evaluate(model, objective, param0().detach()).abs().mean().clamp_min(1.0))
            for _, pen, w in penalties:
                full = full - (w * scale) * pen
        param = ImageParam(size, len(job), fft=args.param == "fft", decorrelate=not args.no_decorrelate,
                           decay_power=args.decay_power, alpha=args.alpha, generator=generator)
        result = render(model, full, param=param, transforms=args.transforms, steps=args.steps, lr=args.lr,
                        generator=generator, seed=args.seed, device=model.mean.device,
                        progress=not args.quiet, precision=args.precision, relu_grad=relu_grad)
        values = evaluate(model, objective, result.images)
        for i, ((target, _), k) in enumerate(job):
            name = _filename(target, args.negative, k, kdiv)
            stem, n = name[:-4], 2
            while name in used:  # the same unit asked twice (e.g. `tabby 281`) keeps both files
                name, n = f"{stem}-{n}.png", n + 1
            used.add(name)
            save_png(result.images[i], out_dir / name)
            items.append({
                "model": model.name, "layer": target["layer"], "unit": target["unit"],
                **({"label": target["label"]} if "label" in target else {}),
                "objective": args.objective or ("neuron" if "@" in str(target["unit"]) else "channel"),
                "description": (parts[i] if kdiv == 1 else parts[0]).description,
                "value": float(values[i]) * sign, "steps": args.steps, "size": size, "seed": args.seed,
                "param": args.param, "decorrelate": not args.no_decorrelate, "transforms": args.transforms,
                "alpha": args.alpha, "negative": args.negative, "diversity_index": k,
                "precision": result.precision, "relu_grad": relu_grad,
                "seconds": round(result.seconds / len(job), 3), "file": name,
            })
    write_manifest(out_dir, items)
    if not args.quiet:
        print(f"wrote {len(items)} image(s) and manifest.json to {out_dir}")
    return 0
