"""`vizsuite patch MODEL --units U... --source IMG --dest IMG --target T -o DIR`: activation
patching from a source into a destination image: before, after, restored, position heatmaps."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from .common import add_basis_arg, add_model_args, add_quiet, bases_from_args, check_units, model_from_args


def register(sub) -> None:
    p = sub.add_parser("patch", help="activation patching: source units into a destination image",
                       description="Put the units' activations recorded on the source image into the destination "
                                   "image; report the destination's target before and after and the fraction "
                                   "of the source-destination difference restored (manifest.json, report.html), "
                                   "each unit patched alone, and a heatmap per layer of where the information "
                                   "sits (the units patched at one position at a time).")
    add_model_args(p)
    p.add_argument("--units", nargs="+", required=True, metavar="UNIT", help="units to patch (any layers, bases)")
    p.add_argument("--source", required=True, metavar="IMG", help="image the activations come from")
    p.add_argument("--dest", required=True, metavar="IMG", help="image they are patched into")
    p.add_argument("--target", default="top1", metavar="T",
                   help="top1 (the source's predicted class) | INDEX | LABEL | LAYER:UNIT (default top1)")
    p.add_argument("--prob", action="store_true", help="a class target reads the probability, not the logit")
    add_basis_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import datetime as dt

    import numpy as np

    from ..attribution.heatmap import colorize, symmetric_scale
    from ..capture import list_layers
    from ..fileio import atomic_path, write_manifest
    from ..images import load_image, save_png
    from ..interventions import patch, patch_positions, patch_sweep
    from ..interventions.report import render_patch
    from .ablate import check_target

    for flag, path in (("--source", args.source), ("--dest", args.dest)):
        load_image(path)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    bases = bases_from_args(args)
    model = model_from_args(args)
    layers = list_layers(model)
    units = [u for u, _ in check_units(model, args.units, bases, layers)]
    target = check_target(model, args.target, bases, args.prob, layers)
    res = patch(model, args.source, args.dest, units, target)
    rows = []
    by_layer: dict = {}
    for u in units:
        by_layer.setdefault(u.layer, []).append(u)
    for layer, us in by_layer.items():
        sweep = patch_sweep(model, args.source, args.dest, us, target)
        rows += [{"unit": str(u), "after": float(a), "restored": float(r)}
                 for u, a, r in zip(sweep.units, sweep.after, sweep.restored)]
    heatmaps, pos = [], []
    for layer, us in by_layer.items():
        info = next(i for i in layers if i.name == layer)
        if len(info.shape) != 3:
            continue
        plain = [u for u in us if u.y is None]
        if not plain:
            continue
        heat = patch_positions(model, args.source, args.dest, layer, target, plain)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer)
        scale = max(symmetric_scale(np.nan_to_num(heat.restored)), 1e-12)
        img = colorize(np.nan_to_num(heat.restored), scale).astype(np.float32) / 255.0
        reps = max(1, 224 // img.shape[0])
        img = img.repeat(reps, 0).repeat(reps, 1)
        save_png(img, out / f"heatmap_{safe}.png")
        with atomic_path(out / f"heatmap_{safe}.npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, heat.restored)
        what = ", ".join(str(u) for u in plain)
        heatmaps.append({"file": f"heatmap_{safe}.png", "layer": layer, "what": what, "scale": scale})
        pos.append({"file": f"heatmap_{safe}.png", "array": f"heatmap_{safe}.npy", "kind": "position_heatmap",
                    "model": model.name, "layer": layer, "units": [str(u) for u in plain],
                    "target": str(target), "before": heat.before, "source_value": heat.source_value,
                    "restored_map": np.nan_to_num(heat.restored).tolist()})
    restored = None if res.restored != res.restored else res.restored
    items = [{"file": "report.html", "kind": "patch", "model": model.name, "units": [str(u) for u in units],
              "target": str(target), "source": str(args.source), "dest": str(args.dest), "before": res.before,
              "after": res.after, "source_value": res.source_value, "restored": restored}]
    items += [{"file": "report.html", "kind": "unit", "model": model.name, "unit": r["unit"], "target": str(target),
               "before": res.before, "after": r["after"],
               "restored": None if r["restored"] != r["restored"] else r["restored"]} for r in rows]
    items += pos
    write_manifest(out, items, model=model.name, target=target.as_dict(), source=str(args.source),
                   dest=str(args.dest), before=res.before, after=res.after, source_value=res.source_value,
                   restored=restored)
    render_patch(out, model=model.name, target=str(target), source=Path(args.source).name,
                 dest=Path(args.dest).name, units=[str(u) for u in units], before=res.before, after=res.after,
                 source_value=res.source_value, restored=res.restored, heatmaps=heatmaps, rows=rows,
                 created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if not args.quiet:
        print(f"patched {len(units)} unit(s): before {res.before:.4g}, after {res.after:.4g}, "
              f"restored {res.restored:.3f} ({out}/report.html)")
    return 0
