"""`vizsuite ablate MODEL --layer L | --units U... --images DIR --target T [--mode M] -o DIR`:
exact ablation effects per unit (and the first-order estimate), effects.csv, manifest, report."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import UserError
from .common import (add_basis_arg, add_executor_args, add_model_args, add_quiet, bases_from_args, check_units,
                     executor_options, image_folder, model_from_args)


def register(sub) -> None:
    p = sub.add_parser("ablate", help="exact effect of ablating each unit on a target",
                       description="Ablate each unit of a layer (or each given unit) on every image of a folder "
                                   "and measure the change of a target (ablated minus intact): effects.csv, "
                                   "manifest.json and report.html (ranked bar chart). Also reports the "
                                   "first-order estimate (gradient x change) and its rank correlation.")
    add_model_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--layer", metavar="LAYER", help="ablate every channel of this layer")
    which.add_argument("--units", nargs="+", metavar="UNIT", help="ablate these units (one layer; any basis)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images to measure on")
    p.add_argument("--target", default="top1", metavar="T",
                   help="top1 | class INDEX | LABEL | LAYER:UNIT (default top1: each image's predicted class)")
    p.add_argument("--prob", action="store_true", help="a class target reads the probability, not the logit")
    p.add_argument("--mode", default="zero", choices=None, metavar="MODE",
                   help="zero | mean (reference mean) | resample (another image's value); default zero")
    p.add_argument("--reference", metavar="DIR", help="reference images for --mode mean (default: --images)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="images per base pass (default 8)")
    p.add_argument("--chunk", type=int, metavar="N", help="ablated copies per forward (default 48)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resample pairing (default 0)")
    add_basis_arg(p)
    p.add_argument("--units-per-task", type=int, default=32, metavar="N",
                   help="units per task (default 32): the sweep runs as tasks (OUT/.cache/tasks), so a rerun "
                        "reuses finished ones and --executor ray spreads them over a cluster")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    add_executor_args(p)
    add_quiet(p)
    p.set_defaults(func=run)


def _validate(args) -> None:
    from ..interventions import MODES

    if args.mode not in MODES:
        raise UserError(f"unknown --mode {args.mode!r} (choose {', '.join(MODES)})")
    for name, value in (("--batch-size", args.batch_size), ("--chunk", args.chunk),
                        ("--units-per-task", args.units_per_task)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1")
    if args.reference and args.mode != "mean":
        raise UserError("--reference applies to --mode mean only")
    image_folder(args.images, "--images")
    if args.reference:
        image_folder(args.reference, "--reference")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")


def check_target(model, text, bases, prob, layers):
    """Parse the target and validate a unit target against the model."""
    from ..interventions import parse_target

    target = parse_target(text, model, bases, prob)
    if target.kind == "unit":
        check_units(model, [target.unit], bases, layers)
    elif target.kind == "class" and model.labels and target.index >= len(model.labels):
        raise UserError(f"class index {target.index} out of range (model has {len(model.labels)} classes: "
                        f"0..{len(model.labels) - 1})")
    return target


def run(args) -> int:
    import datetime as dt

    from ..capture import list_layers
    from ..errors import close_matches
    from ..fileio import write_manifest, write_text
    from ..interventions.report import render_ablation
    from ..tasks import run_tasks
    from ..tasks.effects import ablation_tasks, merge_chunks
    from ..units import layer_units

    _validate(args)
    bases = bases_from_args(args)
    model = model_from_args(args)
    layers = list_layers(model)
    if args.layer:
        by_name = {info.name: info for info in layers}
        if args.layer not in by_name:
            raise UserError(f"unknown layer {args.layer!r}{close_matches(args.layer, by_name)}")
        layer = args.layer
        if not by_name[layer].channels:
            raise UserError(f"layer {layer} has no channels to ablate")
        units = layer_units(layer, by_name[layer].channels)
    else:
        units = [u for u, _ in check_units(model, args.units, bases, layers)]
        if len({u.layer for u in units}) != 1:
            raise UserError("--units must all be of one layer (run once per layer)")
        layer = units[0].layer
    target = check_target(model, args.target, bases, args.prob, layers)
    options = executor_options(args, model)
    # the engine's own checks (a target computed before the layer, outputs that are no tensor)
    # on one image and unit, before any task or file exists
    from ..images import find_images
    from ..interventions import ablation_effects

    try:
        ablation_effects(model, units[:1], find_images(args.images)[:8], target, mode="zero")
    except UserError as exc:
        if "no readable images" not in str(exc):  # the sweep itself skips unreadable images
            raise
    tasks = ablation_tasks(model, units, args.images, target, mode=args.mode, reference=args.reference,
                           batch_size=args.batch_size, chunk=args.chunk, seed=args.seed,
                           units_per_task=args.units_per_task)
    report = run_tasks(tasks, Path(args.output) / ".cache" / "tasks", model=model if options["loader"] is None else None,
                       progress=not args.quiet, desc="ablate", **options)
    fx = merge_chunks(units, target, args.mode, [report.result(t).value for t in tasks])
    n = len(fx.exact)
    order = fx.ranking("abs")
    effect, std, est = fx.effect, fx.effect_std, fx.estimate
    rows = []
    for rank, j in enumerate(order, 1):
        rows.append({"rank": rank, "unit": str(fx.units[j]), "effect": float(effect[j]),
                     "effect_std": float(std[j]), "estimate": float(est[j]), "images": n})
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["rank", "unit", "effect", "effect_std", "estimate", "images"],
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text(out / "effects.csv", buf.getvalue())
    items = [{"file": "effects.csv", "model": model.name, "layer": layer, "unit": r["unit"],
              "unit_json": fx.units[order[r["rank"] - 1]].to_json(), "rank": r["rank"], "mode": args.mode,
              "target": str(target), "effect": r["effect"], "effect_std": r["effect_std"],
              "estimate": r["estimate"], "images": n} for r in rows]
    rho = fx.rank_correlation
    write_manifest(out, items, model=model.name, layer=layer, target=target.as_dict(), mode=args.mode,
                   images=n, rank_correlation=None if rho != rho else rho, seconds=fx.seconds,
                   report="report.html")
    render_ablation(out, model=model.name, layer=layer, target=str(target), mode=args.mode, rows=rows, images=n,
                    rank_correlation=rho, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    seconds=fx.seconds)
    if not args.quiet:
        print(f"ablated {len(rows)} unit(s) of {layer} on {n} image(s): {out}/report.html "
              f"(estimate rank correlation {rho:.3f}; {report.summary()})")
    return 0
