"""`vizsuite attribute MODEL IMAGE... --method lrp,ig -o DIR`: heatmaps, raw arrays, manifest, report."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import UserError
from .common import (add_basis_arg, add_model_args, add_quiet, bases_from_args, check_output, check_units,
                     model_from_args)


def register(sub) -> None:
    p = sub.add_parser("attribute", help="attribution heatmaps (LRP, integrated gradients, ...)",
                       description="Explain predictions: per image and method a raw .npy, a heatmap, an "
                                   "overlay, manifest.json and report.html.")
    add_model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any Pillow format)")
    p.add_argument("--method", default="lrp", metavar="M[,M...]",
                   help="saliency, gradient_x_input (gxi), integrated_gradients (ig), smoothgrad (sg), "
                        "gradcam, lrp (default lrp)")
    add_basis_arg(p)
    p.add_argument("--target", default="top1", metavar="T",
                   help="top1 | topK | INDEX | LABEL | LAYER:UNIT[@Y,X] (default top1)")
    p.add_argument("--composite", default="epsilon_plus_flat", metavar="NAME",
                   help="LRP composite: epsilon_plus_flat, epsilon_gamma_box, epsilon_alpha2_beta1, "
                        "custom:PATTERN=RULE,... (default epsilon_plus_flat)")
    p.add_argument("--steps", type=int, metavar="N", help="integrated gradients steps")
    p.add_argument("--baseline", metavar="B", help="integrated gradients baseline: black | blur | noise")
    p.add_argument("--internal-batch-size", type=int, metavar="N", help="integrated gradients points per pass")
    p.add_argument("--layer", metavar="LAYER", help="Grad-CAM layer (default: last spatial layer)")
    p.add_argument("--base", metavar="M", help="method SmoothGrad averages (default saliency)")
    p.add_argument("--samples", type=int, metavar="N", help="SmoothGrad samples")
    p.add_argument("--sigma", type=float, metavar="S", help="SmoothGrad noise (fraction of the [0, 1] range)")
    p.add_argument("--seed", type=int, default=0, help="seed for noise (SmoothGrad, noise baselines)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    add_quiet(p)
    p.set_defaults(func=run)


def _method_options(method: str, args) -> dict:
    """The library options one method gets from the command line."""
    if method == "integrated_gradients":
        opts = {k: v for k, v in (("steps", args.steps), ("baseline", args.baseline),
                                   ("internal_batch_size", args.internal_batch_size)) if v is not None}
        return {**opts, "seed": args.seed}
    if method == "gradcam":
        return {"layer": args.layer} if args.layer else {}
    if method == "lrp":
        return {"composite": args.composite}
    if method == "smoothgrad":
        from ..attribution import resolve_method

        base = resolve_method(args.base or "saliency")
        opts = {"base": base, "seed": args.seed}
        if args.samples is not None:
            opts["samples"] = args.samples
        if args.sigma is not None:
            opts["sigma"] = args.sigma
        base_opts = _method_options(base, args) if base != "smoothgrad" else {}
        base_opts.pop("seed", None)  # the seed drives SmoothGrad's noise
        return {**opts, **base_opts}
    return {}


MAX_TOP = 20  # --target topK: each target is a .npy and two PNGs per image and method

# the run's own files: a per-image folder must never take one of these names
RESERVED = {"manifest.json", "report.html", "colour_scale.png"}


def _stems(paths: list[str]) -> list[str]:
    """File-name-safe, unique stems for the images (bird, bird-2, ...), never a reserved name."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(p).stem).strip("._") or "image"
        if stem.lower() in RESERVED or stem.lower().endswith(".part"):
            stem = f"{stem}_image"
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def validate(args) -> list[str]:
    """Check everything that can be checked before loading the model; returns method names."""
    from ..attribution import parse_target, resolve_method
    from ..attribution.lrp import composite_key, parse_rules
    from ..images import load_image

    methods = list(dict.fromkeys(resolve_method(m) for m in args.method.split(",") if m.strip()))
    if not methods:
        raise UserError("--method needs at least one method")
    if "lrp" in methods or (args.base and resolve_method(args.base) == "lrp"):
        if composite_key(args.composite) == "custom":
            if ":" not in args.composite:
                raise UserError("custom composite needs rules: --composite custom:PATTERN=RULE,...")
            parse_rules(args.composite.split(":", 1)[1])
    spec = parse_target(args.target, bases_from_args(args))
    if spec.kind == "top" and spec.k > MAX_TOP:
        raise UserError(f"--target top{spec.k}: at most top{MAX_TOP} (every target writes an array and two "
                        f"images per image and method)")
    for name, value in (("--steps", args.steps), ("--samples", args.samples), ("--internal-batch-size",
                                                                              args.internal_batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1")
    if args.baseline is not None and args.baseline not in ("black", "zero", "blur", "noise", "white"):
        raise UserError(f"unknown --baseline {args.baseline!r}: choose black, blur or noise")
    for path in args.images:
        load_image(path)
    check_output(args.output)
    return methods


def run(args) -> int:
    import datetime as dt
    from urllib.parse import quote

    import numpy as np
    import torch
    from tqdm import tqdm

    from ..attribution import attribute, parse_target
    from ..attribution.heatmap import colorize, colour_bar, overlay, symmetric_scale, to_map
    from ..attribution.report import render_report
    from ..fileio import atomic_path, write_manifest
    from ..images import load_batch, save_png, to_uint8

    methods = validate(args)
    model = model_from_args(args)
    bases = bases_from_args(args)
    spec = parse_target(args.target, bases)
    if spec.kind == "unit":  # layer, index, position, and a basis made for this layer and model
        check_units(model, [spec.unit], bases)
    batch = load_batch(args.images, model.input_size, model.spec.crop_pct).to(model.mean.device)
    stems = _stems(args.images)

    # Compute everything first: a bad target (exit 2) must leave no files behind.
    results = {}
    for method in tqdm(methods, desc="attribute", disable=args.quiet, leave=False):
        results[method] = attribute(model, batch, spec, method, **_method_options(method, args))

    with torch.no_grad():
        probs = torch.softmax(model(batch).float(), dim=1)
    top = probs.topk(min(5, probs.shape[1]), dim=1)
    predictions = [[{"index": int(i), "label": model.label(int(i)), "probability": float(v)}
                    for v, i in zip(vals, idxs)] for vals, idxs in zip(top.values, top.indices)]

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    legend = "colour_scale.png"
    save_png(colour_bar().astype(np.float32) / 255.0, out / legend)
    items, rows = [], []
    photos = [to_uint8(batch[i]) for i in range(batch.shape[0])]
    for i, (path, stem) in enumerate(zip(args.images, stems)):
        folder = out / stem
        input_png = f"{stem}/input.png"
        save_png(photos[i].astype(np.float32) / 255.0, out / input_png)
        cells_by_rank: dict = {}
        for method in methods:
            res = results[method]
            for row in res.rows_for(i):
                t = res.targets[row]
                suffix = f"_rank{t.rank}" if t.rank and len(res.rows_for(i)) > 1 else ""
                base = f"{method}{suffix}"
                raw = res.attribution[row].detach().float().cpu().numpy()
                with atomic_path(folder / f"{base}.npy") as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, raw)
                heat = to_map(raw)
                scale = symmetric_scale(heat)
                save_png(colorize(heat, scale).astype(np.float32) / 255.0, folder / f"{base}_heatmap.png")
                save_png(overlay(photos[i], heat, scale).astype(np.float32) / 255.0, folder / f"{base}_overlay.png")
                check = res.check.as_dict(row) if res.check else None
                items.append({
                    "file": f"{stem}/{base}.npy", "heatmap": f"{stem}/{base}_heatmap.png",
                    "overlay": f"{stem}/{base}_overlay.png", "input": input_png, "image": str(path),
                    "model": model.name, "method": method, "options": res.params, "target": t.as_dict(),
                    "score": float(res.scores[row]), "check": check, "prediction": predictions[i],
                    "scale": scale, "size": int(batch.shape[-1]), "seconds": res.seconds / max(1, len(res)),
                })
                key = (t.rank, str(t))
                cells_by_rank.setdefault(key, {})[method] = {
                    "method": method, "heatmap": quote(f"{stem}/{base}_heatmap.png"),
                    "overlay": quote(f"{stem}/{base}_overlay.png"), "check": check,
                    "options": ", ".join(f"{k}={v}" for k, v in res.params.items()
                                         if v is not None and k != "base_options"),
                }
        for (rank, tname), cells in cells_by_rank.items():
            rows.append({"name": Path(path).name, "input": quote(input_png), "target": tname,
                         "prediction": predictions[i], "cells": [cells.get(m) for m in methods]})
    write_manifest(out, items, model=model.name, target=args.target, methods=methods)
    render_report(out, model=model.name, target=args.target, methods=methods, rows=rows,
                  created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), legend=legend)
    if not args.quiet:
        print(f"wrote {len(items)} attributions for {len(args.images)} image(s) to {out}/report.html")
    return 0
