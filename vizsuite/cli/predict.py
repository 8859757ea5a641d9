"""`vizsuite predict MODEL IMAGE...`: top-5 labels and probabilities."""

from __future__ import annotations

import json

from .common import add_model_args, model_from_args


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images (top-5)",
                       description="Classify photos: top-k labels with probabilities.")
    add_model_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any Pillow format)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes (default 5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def predict(model, paths, top: int = 5) -> list[dict]:
    """Top-k predictions for each image path: [{image, top: [{index, label, probability}]}]."""
    import torch

    from ..images import load_batch

    batch = load_batch(paths, model.input_size, model.spec.crop_pct).to(model.mean.device)
    with torch.no_grad():
        probs = torch.softmax(model(batch).float(), dim=1)
    k = min(top, probs.shape[1])
    values, indices = probs.topk(k, dim=1)
    return [{"image": str(path), "top": [{"index": int(i), "label": model.label(int(i)), "probability": float(v)}
                                          for v, i in zip(vals, idxs)]}
            for path, vals, idxs in zip(paths, values, indices)]


def run(args) -> int:
    from ..errors import UserError
    from ..images import load_image

    if args.top < 1:
        raise UserError("--top must be at least 1")
    for path in args.images:  # validate every image before loading the model
        load_image(path)
    model = model_from_args(args)
    results = predict(model, args.images, args.top)
    if args.json:
        from ..fileio import dumps

        print(dumps({"model": model.name, "results": results}, indent=2))
        return 0
    for res in results:
        print(res["image"])
        for row in res["top"]:
            print(f"  {row['probability']:7.2%}  {row['label']}  ({row['index']})")
    return 0
