"""`vizsuite probe MODEL --layers L1,L2 --concept NAME=DIR ... [--random DIR ...] -o DIR`: where
is a concept linearly decodable? Held-out accuracy of linear probes per layer (table, SVG plot,
report), and each probe's direction saved as a basis (docs/concepts.md)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .common import add_model_args, model_from_args
from .tcav import add_concept_args, check_common, check_sizes, parse_concepts, parse_layers, save_cav


def register(sub) -> None:
    p = sub.add_parser("probe", help="linear probes: held-out accuracy of each concept per layer",
                       description="Train linear probes (logistic regression, linear SVM, mean difference) separating "
                                   "each concept's images from random counterexamples (or, without --random, from "
                                   "the other concepts) at each layer; print the held-out accuracy table, write "
                                   "probe.svg, report.html, manifest.json and the probe directions as bases "
                                   "(cavs/NAME__LAYER.npz: row 0 is --method, then the other methods).")
    add_model_args(p)
    add_concept_args(p, random_required=False)
    p.add_argument("--methods", default="logistic,svm,mean", metavar="M,M",
                   help="probe methods to compare (default logistic,svm,mean)")
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from ..concepts import METHODS, layer_vectors, probe
    from ..concepts.report import accuracy_svg, render_probe
    from ..fileio import write_manifest, write_text
    from ..images import find_images

    check_common(args)
    methods = list(dict.fromkeys(m.strip() for m in args.methods.split(",") if m.strip()))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise UserError(f"unknown --methods {','.join(bad) or args.methods!r} (choose from {', '.join(METHODS)})")
    methods = [args.method] + [m for m in methods if m != args.method]   # row 0 of each basis: --method
    concepts = parse_concepts(args.concept)
    check_sizes(concepts, args.test_fraction)
    negatives = []
    for folder in args.random:
        if not Path(folder).is_dir():
            raise UserError(f"random folder {folder} not found")
        negatives += find_images(folder)
    if not negatives and len(concepts) < 2:
        raise UserError("give --random DIR, or at least two concepts (each is probed against the others)")
    if negatives:
        from ..concepts import Concept

        check_sizes({"random": Concept("random", negatives)}, args.test_fraction)
    model = model_from_args(args)
    layers = parse_layers(args.layers, model)
    out = Path(args.output)
    cache = Path(args.cache) if args.cache else out / ".cache"
    passes = {name: layer_vectors(model, c.paths, layers, args.representation, cache_dir=cache,
                                  batch_size=args.batch_size, progress=not args.quiet, desc=f"concept {name}",
                                  masks=c.masks)
              for name, c in concepts.items()}
    vec = {name: lv.result() for name, lv in passes.items()}
    neg = (layer_vectors(model, sorted(set(negatives)), layers, args.representation, cache_dir=cache,
                         batch_size=args.batch_size, progress=not args.quiet, desc="random images").result()
           if negatives else None)
    channels = {layer: shape[0] for layer, shape in next(iter(passes.values())).shapes.items()}
    out.mkdir(parents=True, exist_ok=True)
    items, rows, series = [], [], {}
    for name in concepts:
        for m in methods:
            series[f"{name} ({m})"] = []
    for layer in layers:
        for name in concepts:
            other = neg[layer] if neg is not None else np.concatenate([vec[o][layer] for o in concepts if o != name])
            res = probe(vec[name][layer], other, name, layer, methods, seed=args.seed,
                        test_fraction=args.test_fraction)
            rel = save_cav(out, name, layer, [res.cavs[m].vector for m in methods], methods, model,
                           channels[layer], args.representation)
            for m in methods:
                c = res.cavs[m]
                series[f"{name} ({m})"].append(c.accuracy)
                items.append({"file": rel, "concept": name, "layer": layer, "method": m, "accuracy": c.accuracy,
                              "train": c.train, "test": c.test, "cav": rel, "basis_row": methods.index(m)})
            rows.append({"concept": name, "layer": layer, "accuracy": {m: res.cavs[m].accuracy for m in methods},
                         "cav": rel})
    write_text(out / "probe.svg", accuracy_svg(layers, series))
    meta = (f"{len(layers)} layer(s) · {len(concepts)} concept(s) · counterexamples: "
            f"{'random (' + str(len(set(negatives))) + ' images)' if negatives else 'the other concepts'} · "
            f"{args.representation} activations · held-out fraction {args.test_fraction:g} · seed {args.seed}")
    render_probe(out, model=model.name, rows=rows, methods=methods, meta=meta)
    write_manifest(out, items, model=model.name, layers=layers, methods=methods, representation=args.representation,
                   test_fraction=args.test_fraction, seed=args.seed, plot="probe.svg", report="report.html")
    if not args.quiet:
        width = max(8, *(len(n) for n in concepts))
        print(f"{'concept':<{width}} {'layer':<20} " + " ".join(f"{m:>9}" for m in methods))
        for r in rows:
            print(f"{r['concept']:<{width}} {r['layer']:<20} " + " ".join(f"{r['accuracy'][m]:9.3f}" for m in methods))
        print(f"held-out accuracy per layer: {out}/probe.svg, {out}/report.html")
    return 0
