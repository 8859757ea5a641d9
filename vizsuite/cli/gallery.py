"""`vizsuite gallery MODEL|SPEC.toml -o SITE`: a Microscope-style static site for a model.

A spec file (galleries/*.toml) holds the same settings as the flags; flags override it.
Rerunning reuses every finished task; an interrupted build resumes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..errors import UserError
from ..limits import check_size
from .common import (add_basis_arg, add_executor_args, add_model_args, add_quiet, bases_from_args, check_output,
                     check_seed, executor_options, model_from_args)

SPEC_KEYS = {"model", "weights", "random_weights", "mean", "std", "input_size", "layers", "units", "images",
             "steps", "size", "diversity", "k", "fan", "seed", "circuits", "jobs", "out", "ablation", "describe"}


def register(sub) -> None:
    p = sub.add_parser("gallery", help="build a static gallery site (layers, neurons, circuits)",
                       description="Build a Microscope-style static site: layer pages, neuron pages (feature "
                                   "visualization, diversity, negative, dataset examples, supported classes, "
                                   "strongest inputs/outputs) and circuit pages. MODEL may be a gallery spec "
                                   "(.toml) whose settings the flags override.")
    add_model_args(p)
    p.add_argument("-o", "--out", metavar="SITE", help="output folder (required unless the spec sets `out`)")
    p.add_argument("--layers", metavar="L1,L2", help="layers (default: the model's default layers)")
    p.add_argument("--units", metavar="all|N|LIST", help="units per layer: all, the first N, or a comma list "
                   "(default 8)")
    p.add_argument("--images", metavar="DIR", help="photos for dataset examples and class support")
    p.add_argument("--steps", type=int, metavar="N", help="optimization steps per image (default 256)")
    p.add_argument("--size", type=int, metavar="PX", help="rendered image size (default 128)")
    p.add_argument("--diversity", type=int, metavar="K", help="diversity images per unit (default 4; 0 = none)")
    p.add_argument("-k", type=int, metavar="K", help="dataset examples per sign (default 6)")
    p.add_argument("--fan", type=int, metavar="N", help="strongest inputs/outputs per unit (default 4)")
    p.add_argument("--seed", type=int, metavar="S", help="random seed (default 0)")
    p.add_argument("--circuit", action="append", metavar="LAYER:UNIT", default=None,
                   help="also draw this unit's circuit over two earlier layers (repeatable)")
    add_basis_arg(p)
    p.add_argument("--no-describe", dest="describe", action="store_false", default=None,
                   help="skip the one-line unit descriptions (tuning curves, top classes; docs/describe.md)")
    p.add_argument("--ablation", choices=("mean", "zero", "none"), default=None,
                   help="how neuron pages measure what a unit does and uses, with --images (default mean: "
                        "the unit set to its mean over the images; none: skip)")
    add_executor_args(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _read_spec(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"gallery spec not found: {path}")
    try:
        spec = tomllib.loads(p.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read gallery spec {path}: {exc}") from None
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise UserError(f"unknown key(s) in {path}: {', '.join(sorted(unknown))}")
    if "model" not in spec:
        raise UserError(f"gallery spec {path} names no model")
    for key, value in spec.items():
        _check_spec_type(path, key, value)
    base = p.resolve().parent  # relative paths in a spec are relative to the spec file
    for key in ("images", "out", "weights"):
        if key in spec:
            spec[key] = str((base / spec[key]).resolve()) if not Path(spec[key]).is_absolute() else spec[key]
    return spec


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# key -> (check, what the key expects)
SPEC_TYPES = {
    "model": (lambda v: isinstance(v, str), "a string"),
    "weights": (lambda v: isinstance(v, str), "a path (string)"),
    "random_weights": (lambda v: isinstance(v, bool), "true or false"),
    "mean": (lambda v: _is_number(v) or (isinstance(v, list) and all(map(_is_number, v))), "a number or a list of numbers"),
    "std": (lambda v: _is_number(v) or (isinstance(v, list) and all(map(_is_number, v))), "a number or a list of numbers"),
    "input_size": (_is_int, "an integer"),
    "layers": (lambda v: isinstance(v, str) or _is_str_list(v), "a string or a list of strings"),
    "units": (lambda v: isinstance(v, str) or _is_int(v) or (isinstance(v, list) and all(map(_is_int, v))),
              '"all", a count, or a list of integers'),
    "images": (lambda v: isinstance(v, str), "a path (string)"),
    "circuits": (lambda v: _is_str_list(v), 'a list of "LAYER:UNIT" strings'),
    "out": (lambda v: isinstance(v, str), "a path (string)"),
    "ablation": (lambda v: v in ("mean", "zero", "none"), '"mean", "zero" or "none"'),
    "describe": (lambda v: isinstance(v, bool), "true or false"),
    **{k: (_is_int, "an integer") for k in ("steps", "size", "diversity", "k", "fan", "seed", "jobs")},
}


def _check_spec_type(path: str, key: str, value) -> None:
    check, what = SPEC_TYPES[key]
    if not check(value):
        raise UserError(f"gallery spec {path}: `{key}` must be {what}, got {value!r}")


def _merge(args) -> None:
    """Fill unset flags from a spec file given as MODEL."""
    if not args.model.endswith(".toml"):
        return
    spec = _read_spec(args.model)
    args.model = spec.pop("model")
    flags = {"circuits": "circuit", "random_weights": "random_weights", "input_size": "input_size"}
    for key, value in spec.items():
        attr = flags.get(key, key)
        if attr in ("mean", "std") and not isinstance(value, list):
            value = [value]
        if getattr(args, attr, None) in (None, False):
            setattr(args, attr, value)


def _units(text, channels: int) -> list[int]:
    if text is None:
        return list(range(min(8, channels)))
    if isinstance(text, int):
        text = str(text)
    if isinstance(text, list):
        return [int(u) for u in text]
    text = str(text).strip()
    if text == "all":
        return list(range(channels))
    try:
        if "," in text:
            return [int(u) for u in text.split(",") if u.strip()]
        n = int(text)
    except ValueError:
        raise UserError(f"bad --units {text!r}: expected all, a count N, or a comma list") from None
    if n < 1:
        raise UserError(f"--units must be at least 1, got {n}")
    return list(range(min(n, channels)))


def _feature_units(text, basis, channels: int) -> list[int]:
    """--units for a feature layer: `all`, a list, or the N most frequent features (by the
    frequencies the dictionary recorded beside its basis file, `features.json`; else index order)."""
    import json

    size = basis.size(channels)
    order = list(range(size))
    listing = Path(basis.path).parent / "features.json" if basis.path else None
    if listing is not None and listing.is_file():
        try:
            ranked = [int(f["index"]) for f in json.loads(listing.read_text("utf-8"))["features"]]
            order = ranked + [f for f in order if f not in set(ranked)]
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable listing: index order
    text = 8 if text is None else text
    if not isinstance(text, list) and (str(text).strip() == "all" or str(text).strip().lstrip("-").isdigit()):
        n = size if str(text).strip() == "all" else int(text)
        if n < 1:
            raise UserError(f"--units must be at least 1, got {n}")
        return sorted(order[:n])
    picked = _units(text, size)
    bad = [f for f in picked if not 0 <= f < size]
    if bad:
        raise UserError(f"feature {bad[0]} out of range: basis {basis.name!r} has {size} features")
    return picked


def run(args) -> int:
    from ..capture import list_layers
    from ..units import Unit, check_unit, parse_unit
    from ..errors import close_matches
    from ..gallery.build import GalleryConfig, build_gallery

    _merge(args)
    if not args.out:
        raise UserError("the output folder is required: -o SITE")
    check_output(args.out)
    if isinstance(args.images, str):
        from ..images import find_images

        find_images(args.images, note=True)
    if isinstance(args.size, int):
        check_size(args.size, "--size")
    if args.seed is not None:
        check_seed(args.seed)
    for name in ("steps", "size", "jobs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} must be at least 1")
    model = model_from_args(args)
    info = list_layers(model)
    by_name = {i.name: i for i in info}
    layers = args.layers if isinstance(args.layers, list) else (
        [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else list(model.spec.default_layers))
    if not layers:
        raise UserError(f"model {model.name} has no default layers; pass --layers")
    bases = bases_from_args(args)
    for key in layers:
        layer, _, name = key.partition("/")
        if layer not in by_name:
            raise UserError(f"unknown layer {layer!r}{close_matches(layer, by_name)}")
        if len(by_name[layer].shape) != 3:
            raise UserError(f"layer {layer} has no spatial positions (shape {by_name[layer].shape}); "
                            f"galleries need convolutional layers")
        if name:
            basis = bases.get_basis(name)
            check_unit(Unit(layer, 0, basis=basis), info)  # a basis for another layer or model: exit 2
    order = [i.name for i in info]
    layers.sort(key=lambda key: (order.index(key.partition("/")[0]), key))
    units = {key: _units(args.units, by_name[key].channels) if "/" not in key else
             _feature_units(args.units, bases[key.partition("/")[2]], by_name[key.partition("/")[0]].channels)
             for key in layers}
    circuits, circuit_layers = [], {}
    for text in args.circuit or []:
        unit = parse_unit(text)
        check_unit(unit, info)
        circuits.append((unit.layer, unit.channel))
        # the two nearest earlier layers among the gallery's and the model's default layers
        pool = sorted({*layers, *model.spec.default_layers} & set(order), key=order.index)
        earlier = [l for l in pool if order.index(l) < order.index(unit.layer) and len(by_name[l].shape) == 3]
        circuit_layers[unit.layer] = earlier[-2:]
    recipe = {}
    if args.steps:
        recipe["steps"] = args.steps
    if args.size:
        recipe["size"] = args.size
    cfg = GalleryConfig(layers=layers, units=units, images=args.images,
                        k=args.k or 6, fan=args.fan or 4,
                        diversity=4 if args.diversity is None else args.diversity,
                        seed=args.seed or 0, recipe=recipe, circuits=circuits, circuit_layers=circuit_layers,
                        ablation=args.ablation or "mean", bases=dict(bases),
                        describe=args.describe is not False)
    report = build_gallery(model, args.out, cfg, progress=not args.quiet, **executor_options(args, model))
    print(f"{report.summary()}; site: {Path(args.out) / 'index.html'}")
    return 0
