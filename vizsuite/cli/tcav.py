"""`vizsuite tcav MODEL --layers L1,L2 --concept NAME=DIR ... --random DIR ... --target CLASS ...
[--images DIR] [--runs N] -o DIR`: TCAV with significance, the causal check, report.

The causal check is composed here, above the engines (docs/architecture.md): the concepts
engine gives the CAV as a `Directions` basis, the interventions engine measures the class
logit's change when that direction is projected out at the layer (zero ablation of the
direction unit LAYER/CONCEPT:0), and optvis renders it. docs/concepts.md.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import UserError
from .common import add_model_args, add_quiet, check_output, check_seed, model_from_args

# ---------------------------------------------------------------- shared with `probe`

def add_concept_args(p, random_required: bool) -> None:
    p.add_argument("--layers", required=True, metavar="L1,L2", help="layers to test, comma-separated")
    p.add_argument("--concept", action="append", required=True, metavar="NAME=DIR",
                   help="a concept: a name and a folder of example images (repeatable)")
    p.add_argument("--random", action="append", default=[], required=random_required, metavar="DIR",
                   help="random counterexamples: one pool folder (seeded subsets are drawn from it), "
                        "or several folders (each one random set); repeatable")
    p.add_argument("--method", default="logistic", metavar="M",
                   help="CAV / probe classifier: logistic | svm | mean (mean difference, FastCAV); default logistic")
    p.add_argument("--representation", default="pooled", metavar="R",
                   help="pooled (mean over positions: a channel-space direction, default) | flat (every value, "
                        "C*H*W: the TCAV paper's and captum's convention)")
    p.add_argument("--test-fraction", type=float, default=0.25, metavar="F",
                   help="held-out fraction of each set for the probe accuracy (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and random sets (default 0)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward (default 16)")
    p.add_argument("--cache", metavar="DIR", help="activation cache (default OUT/.cache): reruns with other "
                                                  "targets, concepts or runs reuse what is there")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    add_quiet(p)


def parse_concepts(specs) -> dict:
    """NAME=DIR specs -> {name: Concept}; one line for a bad spec (`units.named_paths`, shared
    with --basis), a missing or empty folder."""
    from ..concepts import concept_from_folder
    from ..units import named_paths

    out = {}
    for name, folder in named_paths(specs, "concept", "DIR"):
        if "-vs-" in name:
            raise UserError(f"bad concept name {name!r}: '-vs-' names relative CAVs")
        out[name] = concept_from_folder(name, folder)
    return out


def parse_layers(text: str, model) -> list[str]:
    """L1,L2 -> layer names, each checked against the model (unknown: one line with close matches;
    no forward pass needed)."""
    from ..hooks import resolve

    layers = [t.strip() for t in str(text).split(",") if t.strip()]
    if not layers:
        raise UserError("--layers needs at least one layer")
    for layer in layers:
        resolve(model, layer)
    return list(dict.fromkeys(layers))


def check_common(args) -> None:
    from ..concepts import METHODS, REPRESENTATIONS

    if args.method not in METHODS:
        raise UserError(f"unknown --method {args.method!r} (choose {', '.join(METHODS)})")
    if args.representation not in REPRESENTATIONS:
        raise UserError(f"unknown --representation {args.representation!r} (choose {', '.join(REPRESENTATIONS)})")
    if not 0 < args.test_fraction < 1:
        raise UserError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    check_seed(args.seed)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder")
    check_output(out)


def check_sizes(concepts: dict, test_fraction: float) -> None:
    from ..concepts import min_examples

    need = min_examples(test_fraction)
    for c in concepts.values():
        if len(c) < need:
            raise UserError(f"concept {c.name!r} has {len(c)} image(s); a held-out split of {test_fraction:g} "
                            f"needs at least {need}")


def save_cav(out: Path, name: str, layer: str, vectors, labels, model, channels: int, representation: str) -> str:
    """Write cavs/NAME__LAYER.npz (a Directions basis named NAME for LAYER: `--basis
    NAME=that file` makes LAYER/NAME:0 the concept direction) and return its relative path."""
    import numpy as np

    from ..concepts import channel_direction
    from ..hashing import model_fingerprint
    from ..units import Directions, save_basis

    rows = np.stack([channel_direction(v, channels, representation) for v in vectors])
    rel = f"cavs/{name}__{layer}.npz"
    (out / "cavs").mkdir(parents=True, exist_ok=True)
    save_basis(Directions(rows, name=name, layer=layer, model=model_fingerprint(model), labels=labels), out / rel)
    return rel


def copy_examples(out: Path, concept, k: int = 6, size: int = 96) -> list[str]:
    """Up to k thumbnails of a concept's images under examples/NAME/ (relative paths)."""
    from ..images import load_image

    rel = []
    (out / "examples" / concept.name).mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(concept.paths[:k]):
        img = load_image(p).convert("RGB")
        img.thumbnail((size, size))
        name = f"examples/{concept.name}/{i:02d}.png"
        img.save(out / name)
        rel.append(name)
    return rel


# ---------------------------------------------------------------- tcav

def register(sub) -> None:
    p = sub.add_parser("tcav", help="TCAV: does a class use a concept? (with significance and a causal check)",
                       description="Train concept activation vectors (CAVs) for each concept at each layer against "
                                   "random counterexample sets, score the fraction of a class's images whose logit "
                                   "increases along them (TCAV), test against random-vs-random CAVs (two-sided "
                                   "t-test, Bonferroni over the tested triples), and for each significant triple "
                                   "measure the logit change when the direction is projected out. Writes "
                                   "manifest.json, report.html, the CAVs as direction bases (cavs/), per-image "
                                   "scores (scores/).")
    add_model_args(p)
    add_concept_args(p, random_required=True)
    p.add_argument("--target", action="append", required=True, metavar="CLASS[=DIR]",
                   help="a class (INDEX or LABEL) whose logit is tested, on --images or on its own folder "
                        "CLASS=DIR; repeatable")
    p.add_argument("--images", metavar="DIR", help="images of the target classes (for targets without =DIR)")
    p.add_argument("--runs", type=int, metavar="N",
                   help="random runs (default 10 with one pool folder; the number of folders with several)")
    p.add_argument("--relative", action="store_true", help="also test relative CAVs: every concept against "
                                                           "every other (A-vs-B)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after Bonferroni (default 0.05)")
    p.add_argument("--render-steps", type=int, default=64, metavar="N",
                   help="feature-visualization steps per concept direction (default 64; 0: no renders)")
    p.add_argument("--render-size", type=int, default=128, metavar="PX", help="rendered image size (default 128)")
    p.set_defaults(func=run)


def parse_targets(specs, images, model) -> dict:
    """--target CLASS[=DIR] -> {class index: (label, folder)}."""
    from ..targets import parse_target

    out = {}
    for spec in specs:
        text, sep, folder = str(spec).partition("=")
        if sep and not folder:
            raise UserError(f"bad --target {spec!r}: expected CLASS or CLASS=DIR")
        folder = folder or images
        if not folder:
            raise UserError(f"--target {text}: give --images DIR (or --target {text}=DIR)")
        t = parse_target(text.strip())
        if t.kind == "label":
            index = model.class_index(t.label)
        elif t.kind == "class":
            index = t.index
        else:
            raise UserError(f"bad --target {text!r}: TCAV tests one class (INDEX or LABEL)")
        n = len(model.labels) if model.labels else None
        if index < 0 or (n is not None and index >= n):
            raise UserError(f"class index {index} out of range (model has {n} classes: 0..{(n or 1) - 1})")
        d = Path(folder)
        if not d.is_dir():
            raise UserError(f"images folder not found: {folder}")
        if index in out:
            raise UserError(f"target class {index} given twice")
        out[index] = (model.label(index) if model.labels else str(index), d)
    return out


def _validate(args) -> None:
    check_common(args)
    if args.runs is not None and args.runs < 3:
        raise UserError(f"--runs must be at least 3 (a t-test needs several random runs), got {args.runs}")
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.render_steps < 0:
        raise UserError("--render-steps must be 0 or more")
    if not 16 <= args.render_size <= 1024:
        raise UserError("--render-size must be from 16 to 1024")


def run(args) -> int:
    import numpy as np

    from ..concepts import random_sets, tcav
    from ..concepts.report import render_tcav
    from ..fileio import write_manifest, write_text
    from ..images import find_images

    _validate(args)
    concepts = parse_concepts(args.concept)
    check_sizes(concepts, args.test_fraction)
    model = model_from_args(args)
    layers = parse_layers(args.layers, model)
    targets = parse_targets(args.target, args.images, model)
    images = {cls: find_images(folder) for cls, (_, folder) in targets.items()}
    rsets = random_sets(args.random, args.runs, max(len(c) for c in concepts.values()), args.seed)
    out = Path(args.output)
    cache = Path(args.cache) if args.cache else out / ".cache"
    res = tcav(model, layers, concepts, rsets, images, method=args.method, representation=args.representation,
               relative=args.relative, alpha=args.alpha, seed=args.seed, test_fraction=args.test_fraction,
               cache_dir=cache, batch_size=args.batch_size, progress=not args.quiet)
    out.mkdir(parents=True, exist_ok=True)
    channels = {layer: shape[0] for layer, shape in res.shapes.items()}
    cav_files = {}
    for s in res.scores:
        key = (s.concept, s.layer)
        if key not in cav_files:
            cav_files[key] = save_cav(out, s.concept, s.layer, [s.cav], [args.method], model, channels[s.layer],
                                      res.representation)
    effects = causal_check(model, res, out, cav_files, batch_size=args.batch_size, progress=not args.quiet)
    items, rows = [], []
    (out / "scores").mkdir(parents=True, exist_ok=True)
    for s in res.scores:
        label = targets[s.target][0]
        rel = f"scores/{s.concept}__{s.layer}__{s.target}.csv"
        write_text(out / rel, _scores_csv(s, res.images[s.target]))
        effect = effects.get((s.concept, s.layer, s.target))
        item = {"file": rel, "concept": s.concept, "layer": s.layer, "target": s.target, "score": s.score,
                "score_std": s.score_std, "p_value": s.p_value, "significant": s.significant,
                "accuracy": s.accuracy, "cav": cav_files[(s.concept, s.layer)], "ablation_effect": effect}
        items.append(item)
        rows.append({**item, "target_label": f"{s.target} {label}", "null_score": float(np.mean(s.null))})
    directions = render_directions(model, out, cav_files, args) if args.render_steps else []
    examples = [{"name": c.name, "images": len(c), "examples": copy_examples(out, c)} for c in concepts.values()]
    meta = (f"{len(layers)} layer(s) · {len(concepts)} concept(s) · {len(targets)} class(es) · "
            f"{len(res.random)} random runs · CAV: {res.method}, {res.representation} · seed {res.seed} · "
            f"{res.seconds:.1f} s")
    render_tcav(out, model=model.name, rows=rows, concepts=examples, directions=directions, meta=meta,
                runs=len(res.random), tested=res.tested, alpha=res.alpha, render_steps=args.render_steps)
    write_manifest(out, items, model=model.name, layers=layers, method=res.method,
                   representation=res.representation, runs=len(res.random), alpha=res.alpha, tested=res.tested,
                   correction="bonferroni", seed=res.seed, random_accuracy=res.random_accuracy,
                   seconds=res.seconds, report="report.html")
    if not args.quiet:
        print(_table(res, targets, effects))
        sig = sum(s.significant for s in res.scores)
        print(f"{len(res.scores)} triple(s), {sig} significant: {out}/report.html")
    return 0


def _scores_csv(s, paths) -> str:
    """Per image: the fraction of runs whose CAV raises the logit, the mean directional
    derivative over runs, and the concept's presence (projection on the mean CAV)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "positive_fraction", "directional_derivative", "presence"])
    for i, p in enumerate(paths):
        w.writerow([str(p), f"{s.per_image[i]:.6g}", f"{s.sensitivity[i].mean():.9g}", f"{s.presence[i]:.9g}"])
    return buf.getvalue()


def _table(res, targets, effects) -> str:
    head = f"{'concept':<18} {'layer':<16} {'class':<18} {'TCAV':>6} {'std':>6} {'p':>9} sig {'acc':>6} {'ablation':>9}"
    lines = [head]
    for s in res.scores:
        e = effects.get((s.concept, s.layer, s.target))
        lines.append(f"{s.concept:<18.18} {s.layer:<16.16} {str(s.target) + ' ' + targets[s.target][0]:<18.18} "
                     f"{s.score:6.3f} {s.score_std:6.3f} {s.p_value:9.3g} {'yes' if s.significant else 'no ':<3} "
                     f"{s.accuracy:6.3f} {'' if e is None else format(e, '9.4g'):>9}")
    return "\n".join(lines)


def causal_check(model, res, out: Path, cav_files: dict, *, batch_size: int = 8, progress: bool = False) -> dict:
    """{(concept, layer, class): mean change of the class logit when the concept direction is
    projected out at the layer}, for the significant triples: zero ablation of the direction
    unit LAYER/CONCEPT:0 (interventions engine) on the class's images."""
    from ..interventions import ablation_effects
    from ..units import Unit, load_basis

    effects = {}
    for s in res.scores:
        if not s.significant:
            continue
        basis = load_basis(out / cav_files[(s.concept, s.layer)], s.concept)
        fx = ablation_effects(model, [Unit(s.layer, 0, basis=basis)], [Path(p) for p in res.images[s.target]],
                              target=s.target, mode="zero", batch_size=batch_size, progress=progress)
        effects[(s.concept, s.layer, s.target)] = float(fx.effect[0])
    return effects


def render_directions(model, out: Path, cav_files: dict, args) -> list[dict]:
    """A small feature visualization of each concept direction (directions/NAME__LAYER.png)."""
    from ..images import save_png
    from ..optvis import objectives as obj
    from ..optvis import render
    from ..units import Unit, load_basis

    (out / "directions").mkdir(parents=True, exist_ok=True)
    made = []
    for (name, layer), rel in cav_files.items():
        basis = load_basis(out / rel, name)
        unit = Unit(layer, 0, basis=basis)
        r = render(model, obj.unit(unit), size=args.render_size, steps=args.render_steps, seed=args.seed,
                   progress=not args.quiet)
        file = f"directions/{name}__{layer}.png"
        save_png(r.images[0], out / file)
        made.append({"file": file, "unit": f"{layer}/{name}:0"})
    return made
