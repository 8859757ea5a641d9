"""`vizsuite dictionary MODEL LAYER --images DIR --features F -o DIR`: train a sparse dictionary
(TopK / BatchTopK / ReLU-L1 SAE, or the NMF baseline) on a layer's activation vectors.

Writes DIR/basis.npz (read back with `--basis NAME=DIR`: features are units `LAYER/NAME:K`),
DIR/decoder.npy, DIR/features.json and DIR/manifest.json with held-out metrics.
Everything is validated before the activation pass starts.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .common import add_model_args, add_quiet, model_from_args

METHODS = ("topk", "batchtopk", "relu-l1", "nmf")


def register(sub) -> None:
    p = sub.add_parser("dictionary", help="train sparse dictionary features (SAE / NMF) on a layer",
                       description="Train a sparse dictionary on a layer's activation vectors (every position "
                                   "of every image, in a bounded memory budget), evaluate it on held-out "
                                   "images and write a basis for LAYER/NAME:K units.")
    add_model_args(p)
    p.add_argument("layer", metavar="LAYER", help="layer to read (see `vizsuite layers MODEL`)")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of images")
    p.add_argument("--features", type=int, required=True, metavar="F", help="dictionary size")
    p.add_argument("--method", choices=METHODS, default="topk", help="default topk")
    p.add_argument("--k", type=int, default=8, metavar="K",
                   help="active features per vector (topk), on average (batchtopk) (default 8)")
    p.add_argument("--epochs", type=int, default=10, metavar="E", help="passes over the reservoir (default 10)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--stability", action="store_true",
                   help="also train with seed S+1 and report the one-to-one matched decoder cosine")
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate (default 5e-3)")
    p.add_argument("--l1", type=float, default=0.1, help="L1 weight for relu-l1 (default 0.1)")
    p.add_argument("--train-batch", type=int, default=1024, metavar="N", help="vectors per step (default 1024)")
    p.add_argument("--memory-mb", type=float, default=256.0, metavar="MB",
                   help="activation vectors kept for training (a seeded uniform sample beyond it; default 256)")
    p.add_argument("--positions", type=int, default=None, metavar="P",
                   help="read only P seeded random positions per image (default: every position)")
    p.add_argument("--augment", type=int, default=1, metavar="V",
                   help="views per training image: itself, its mirror, seeded crops (default 1: none); "
                        "held-out images are never augmented")
    p.add_argument("--heldout", type=float, default=0.1, metavar="FRAC",
                   help="fraction of images held out for the metrics (default 0.1)")
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="images per forward (default 16)")
    p.add_argument("--name", default=None, help="basis name recorded in the file (default: the folder name)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    add_quiet(p)
    p.set_defaults(func=run)


def _check(args):
    from ..dictionary import TrainConfig

    cfg = TrainConfig(args.method, args.features, k=args.k, epochs=args.epochs, batch_size=args.train_batch,
                      lr=args.lr, l1=args.l1)
    cfg.check()
    if args.memory_mb <= 0:
        raise UserError("--memory-mb must be positive")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if not 1 <= args.augment <= 256:
        raise UserError(f"--augment must be in 1..256, got {args.augment}")
    if args.positions is not None and args.positions < 1:
        raise UserError("--positions must be at least 1")
    if not 0 <= args.heldout < 1:
        raise UserError(f"--heldout must be in [0, 1), got {args.heldout}")
    images = Path(args.images)
    if not images.is_dir():
        raise UserError(f"--images {args.images}: not a folder")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"-o {args.out}: exists and is not a folder")
    return cfg


def run(args) -> int:
    from ..capture import list_layers
    from ..dictionary import train_dictionary, write_dictionary
    from ..errors import close_matches
    from ..images import find_images

    cfg = _check(args)
    if not find_images(args.images):
        raise UserError(f"--images {args.images}: no images found")
    model = model_from_args(args)
    layers = {info.name: info for info in list_layers(model)}
    if args.layer not in layers:
        raise UserError(f"unknown layer {args.layer!r}{close_matches(args.layer, layers)}")
    info = layers[args.layer]
    if len(info.shape) not in (1, 3):
        raise UserError(f"layer {args.layer} outputs shape {info.shape}: a dictionary needs channel vectors")
    if args.method in ("topk", "batchtopk") and args.k > args.features:
        raise UserError(f"--k {args.k} is larger than --features {args.features}")
    name = args.name or Path(args.out).resolve().name
    result = train_dictionary(model, args.layer, args.images, cfg, seed=args.seed, budget_mb=args.memory_mb,
                              positions=args.positions, heldout=args.heldout, with_stability=args.stability,
                              batch_size=args.batch_size, progress=not args.quiet, name=name,
                              augment=args.augment)
    write_dictionary(result, args.out, model_name=model.name)
    m = result.metrics
    where = "held-out" if m["heldout"] else "training-image (nothing held out)"
    line = (f"{args.method} {cfg.features} features on {args.layer}: {where} R2 {m['r2']:.3f}, "
            f"L0 {m['mean_l0']:.2f}, dead {100 * m['dead_fraction']:.1f}%, top-1 agreement "
            f"{100 * m['top1_agreement']:.1f}%, KL {m['kl']:.4f}")
    if result.stability:
        line += f", stability {result.stability['mean_matched_cosine']:.3f}"
    print(line)
    print(f"wrote {Path(args.out) / 'basis.npz'} (use --basis NAME={args.out} and units {args.layer}/NAME:K)")
    return 0
