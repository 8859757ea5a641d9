"""`vizsuite describe MODEL --units U... | --layers L1,L2 [--images DIR] [--concept NAME=DIR ...]
[--random DIR] -o DIR`: one-line unit descriptions from measured evidence (docs/describe.md):
descriptions.json, manifest.json, report.html."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import UserError
from .common import (add_basis_arg, add_executor_args, add_model_args, add_quiet, bases_from_args, check_output,
                     check_units, executor_options, image_folder, model_from_args)


def register(sub) -> None:
    p = sub.add_parser("describe", help="describe units in a line, from tuning curves and data evidence",
                       description="Describe units from evidence measured offline: tuning curves on synthetic "
                                   "stimuli (gratings, colours, curves, dots, checkerboards), the model's classes "
                                   "over each unit's top examples, concept AUROCs, the classes its ablation "
                                   "lowers; each description is scored by simulation on held-out crops. Writes "
                                   "descriptions.json, manifest.json and report.html.")
    add_model_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--units", nargs="+", metavar="UNIT", help="units to describe (any layers and bases)")
    which.add_argument("--layers", metavar="L1,L2", help="describe every channel of these layers")
    p.add_argument("--images", metavar="DIR", help="photos: top classes, causal support and simulation")
    p.add_argument("--concept", action="append", default=[], metavar="NAME=DIR",
                   help="a folder of concept images, scored against --random (repeatable)")
    p.add_argument("--random", metavar="DIR", help="random images the concepts are compared with")
    p.add_argument("-k", type=int, default=8, metavar="K", help="top examples per unit (default 8, at most a "
                   "quarter of the images)")
    p.add_argument("--views", type=int, default=16, metavar="V",
                   help="random crops per image for the simulation score (default 16; 0: no simulation)")
    p.add_argument("--causal", type=int, default=16, metavar="N",
                   help="ablate each unit on the first N images for causal class support (default 16; 0: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the control pairing (default 0)")
    add_basis_arg(p)
    add_executor_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    add_quiet(p)
    p.set_defaults(func=run)


def _concepts(specs) -> dict:
    from ..units import named_paths

    return {name: str(image_folder(path, f"--concept {name}")) for name, path in named_paths(specs, "concept", "DIR")}


def _validate(args) -> dict:
    for flag, value, low in (("-k", args.k, 1), ("--views", args.views, 0), ("--causal", args.causal, 0)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, got {value}")
    if args.images:
        image_folder(args.images, "--images")
    concepts = _concepts(args.concept)
    if concepts and not args.random:
        raise UserError("--concept needs --random DIR (the images concepts are compared with)")
    if args.random:
        if not concepts:
            raise UserError("--random applies to --concept folders; give at least one --concept NAME=DIR")
        image_folder(args.random, "--random")
    check_output(args.output)
    return concepts


def _layer_units(model, text, layers):
    from ..errors import close_matches
    from ..units import layer_units

    by_name = {i.name: i for i in layers}
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UserError("--layers names no layer")
    units = []
    for name in names:
        if name not in by_name:
            raise UserError(f"unknown layer {name!r}{close_matches(name, by_name)}")
        units += layer_units(name, by_name[name].channels)
    return units


def run(args) -> int:
    from ..capture import list_layers
    from ..describe.report import write_outputs
    from ..describe.stimuli import stimulus_set
    from ..tasks import run_tasks
    from ..tasks.describe import describe_tasks

    start = time.perf_counter()
    concepts = _validate(args)
    bases = bases_from_args(args)
    model = model_from_args(args)
    layers = list_layers(model)
    if args.units:
        units = [u for u, _ in check_units(model, args.units, bases, layers)]
    else:
        units = _layer_units(model, args.layers, layers)
    opts = executor_options(args, model)
    tasks = describe_tasks(model, units, images=args.images, concepts=concepts, random=args.random, k=args.k,
                           views=args.views if args.images else 0, seed=args.seed, causal=args.causal)
    out = Path(args.output)
    local = opts["jobs"] <= 1 and opts["executor"] == "local"
    report = run_tasks(tasks, out / ".cache" / "tasks", model=model if local else None, progress=not args.quiet,
                       desc="describe", **opts)
    descriptions = [report.result(t).value for t in tasks]
    write_outputs(out, descriptions, model=model.name, seed=args.seed, stimuli=len(stimulus_set(model.input_size)),
                  images=str(Path(args.images).resolve()) if args.images else None,
                  seconds=time.perf_counter() - start, extra={"executor": opts["executor"]})
    if not args.quiet:
        for d in descriptions[:20]:
            print(f"{d.unit}: {d.description} (confidence {d.confidence:.2f})")
        if len(descriptions) > 20:
            print(f"... and {len(descriptions) - 20} more")
        print(f"{report.summary()}; report: {out / 'report.html'}")
    return 0
