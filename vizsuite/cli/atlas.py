"""`vizsuite atlas MODEL LAYER --images DIR -o SITE`: an activation atlas as a static site."""

from __future__ import annotations

from pathlib import Path

from ..limits import check_size
from .common import add_executor_args, add_model_args, add_quiet, check_output, executor_options, model_from_args


def add_icon_args(p, size: int, steps: int) -> None:
    g = p.add_argument_group("icon rendering")
    g.add_argument("--steps", type=int, default=steps, help=f"optimization steps per icon (default {steps})")
    g.add_argument("--icon-size", type=int, default=size, metavar="PX", help=f"icon size (default {size})")
    g.add_argument("--batch", type=int, default=16, help="icons rendered per batched pass (default 16)")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling, layout and rendering (default 0)")
    g.add_argument("--cache", metavar="DIR", help="task cache folder (default SITE/.cache/tasks); "
                                                  "share one with a gallery to reuse its renders")


def register(sub) -> None:
    p = sub.add_parser("atlas", help="activation atlas of a layer over a folder of photos",
                       description="Sample spatial activations of LAYER over the photos, lay them out in 2-D "
                                   "(UMAP or t-SNE), average them on an N x N grid and render one feature "
                                   "visualization per cell, on a zoomable static page.")
    add_model_args(p)
    p.add_argument("layer", metavar="LAYER", help="a convolutional layer (see `vizsuite layers MODEL`)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of photos (searched recursively)")
    p.add_argument("--grid", type=int, default=20, metavar="N", help="N x N cells (default 20)")
    p.add_argument("--samples", type=int, default=4000, metavar="K",
                   help="activation positions sampled in total (default 4000)")
    p.add_argument("--class", dest="class_label", metavar="LABEL",
                   help="keep only positions that support this class (class activation atlas)")
    p.add_argument("--min-count", type=int, default=3, metavar="M",
                   help="cells need at least M samples to get an icon (default 3)")
    p.add_argument("--reduce", default="auto", choices=["auto", "umap", "tsne", "pca"],
                   help="2-D layout: umap if installed, else tsne (default auto)")
    p.add_argument("--patches", type=int, default=4, metavar="P", help="source patches per cell (default 4)")
    p.add_argument("-o", "--output", required=True, metavar="SITE", help="output folder")
    add_icon_args(p, size=80, steps=96)
    add_executor_args(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..atlas import AtlasConfig, IconRecipe, build_atlas
    from ..errors import UserError
    from ..images import find_images

    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    config = AtlasConfig(grid=args.grid, samples=args.samples, min_count=args.min_count, seed=args.seed,
                         class_label=args.class_label, reduce=args.reduce, patches=args.patches,
                         icon=IconRecipe(size=args.icon_size, steps=args.steps), icon_batch=args.batch,
                         progress=not args.quiet, cache=Path(args.cache) if args.cache else None)
    config.validate()
    check_size(args.icon_size, "--icon-size")
    check_output(args.output)
    paths = find_images(args.images, note=True)  # before the model loads: bad input fails fast
    model = model_from_args(args)
    config.run = executor_options(args, model)
    summary = build_atlas(model, args.layer, paths, Path(args.output), config)
    print(f"atlas: {summary['cells']} cells from {summary['samples']} samples ({summary['reduce']}) "
          f"in {summary['seconds']:.0f}s; {summary['computed'] + summary['reused']} tasks: "
          f"{summary['computed']} computed, {summary['reused']} reused -> {Path(args.output) / 'index.html'}")
    return 0
