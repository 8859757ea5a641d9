"""`vizsuite explain MODEL IMAGE --layer LAYER -o SITE`: building blocks of one prediction."""

from __future__ import annotations

from pathlib import Path

from ..limits import check_size

from .atlas import add_icon_args
from .common import add_model_args, add_quiet, check_output, model_from_args


def register(sub) -> None:
    p = sub.add_parser("explain", help="building blocks of one image's prediction at a layer",
                       description="A page with the image, its prediction, which positions of LAYER support "
                                   "the top class (gradient x activation) and each position's strongest "
                                   "units as feature visualizations.")
    add_model_args(p)
    p.add_argument("image", metavar="IMAGE", help="an image file (any Pillow format)")
    p.add_argument("--layer", required=True, help="a convolutional layer (see `vizsuite layers MODEL`)")
    p.add_argument("--class", dest="class_label", metavar="LABEL", help="explain this class (default: top-1)")
    p.add_argument("--units", type=int, default=3, metavar="K", help="strongest units per position (default 3)")
    p.add_argument("-o", "--output", required=True, metavar="SITE", help="output folder")
    add_icon_args(p, size=128, steps=128)  # the gallery default: renders are shared
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..atlas import ExplainConfig, IconRecipe, build_explain
    from ..errors import UserError
    from ..images import load_image

    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    config = ExplainConfig(units=args.units, class_label=args.class_label, seed=args.seed,
                           icon=IconRecipe(size=args.icon_size, steps=args.steps), icon_batch=args.batch,
                           progress=not args.quiet, cache=Path(args.cache) if args.cache else None)
    config.validate()
    check_size(args.icon_size, "--icon-size")
    check_output(args.output)
    load_image(args.image)  # before the model loads: bad input fails fast
    model = model_from_args(args)
    summary = build_explain(model, Path(args.image), args.layer, Path(args.output), config)
    t = summary["target"]
    print(f"explain: {t['label']} ({t['probability']:.1%}), {summary['units']} units -> "
          f"{Path(args.output) / 'index.html'}")
    return 0
