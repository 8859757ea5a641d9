"""`vizsuite concepts make DIR`: procedurally generated concept folders (stripes at four
orientations, dots, checkerboards, zigzags, colour fields) and a random-noise pool, seeded, with
a manifest, so TCAV and probes run offline (docs/concepts.md)."""

from __future__ import annotations

from pathlib import Path

from .common import add_quiet, check_output, check_seed


def register(sub) -> None:
    p = sub.add_parser("concepts", help="concept image sets (concepts make DIR)",
                       description="Concept image sets for `vizsuite probe` and `vizsuite tcav`.")
    inner = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    inner.required = True
    m = inner.add_parser("make", help="write procedurally generated concept folders",
                         description="Write DIR/NAME/NNN.png for generated concepts (stripes_0, stripes_45, "
                                     "stripes_90, stripes_135, dots, checkerboard, zigzag, red, green, blue, yellow) "
                                     "and DIR/random (noise controls: the random counterexample pool), seeded, "
                                     "plus DIR/manifest.json.")
    m.add_argument("dir", metavar="DIR", help="output folder")
    m.add_argument("--only", metavar="NAMES", help="comma-separated concept names (default: all)")
    m.add_argument("--count", type=int, default=20, metavar="N", help="images per concept (default 20)")
    m.add_argument("--random-count", type=int, default=60, metavar="N",
                   help="noise control images in DIR/random (default 60; 0: none)")
    m.add_argument("--size", type=int, default=128, metavar="PX", help="image size (default 128)")
    m.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_quiet(m)
    m.set_defaults(func=run_make)


def run_make(args) -> int:
    from ..concepts.make import make_concepts
    from ..fileio import write_manifest

    check_seed(args.seed)
    out = Path(args.dir)
    check_output(out)
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    made = make_concepts(out, names, count=args.count, random_count=args.random_count, size=args.size,
                         seed=args.seed, progress=not args.quiet)
    items = [{"file": m.name, "concept": m.name, "images": m.images, "size": args.size, "seed": args.seed,
              "kind": "random" if m.name == "random" else "concept"} for m in made]
    write_manifest(out, items, seed=args.seed, size=args.size)
    if not args.quiet:
        print(f"wrote {len(made)} folder(s), {sum(m.images for m in made)} images: {out}")
    return 0
