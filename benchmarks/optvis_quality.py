"""Does a rendered image excite its unit more than any real photo? efficientnet_lite0, 20 units.

    python benchmarks/optvis_quality.py [--steps 128] [--threads 2] [--precision auto|fp32|bf16]

For 5 channels in each of blocks.2..blocks.5 the unit's mean activation on its rendered image
(plain image at the model's input size, no transforms) is compared with its highest mean
activation over real photos (galleries/photos plus skimage samples, centre-cropped like
`vizsuite predict`). Writes benchmarks/results/optvis_quality.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["blocks.2", "blocks.3", "blocks.4", "blocks.5"]
SKIMAGE = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field",
           "retina", "colorwheel"]


def units(model, per_layer: int = 5):
    from vizsuite.capture import list_layers

    info = {i.name: i for i in list_layers(model)}
    out = []
    for layer in LAYERS:
        c = info[layer].channels
        out += [(layer, (j * c) // per_layer + 1) for j in range(per_layer)]  # spread over the layer
    return out


def photo_batch(size: int, crop_pct: float):
    """N x 3 x size x size photos and their names."""
    from skimage import data

    from vizsuite.images import find_images, load_batch, resize_center_crop, to_array

    paths = find_images(ROOT / "galleries" / "photos")
    batch = [load_batch(paths, size, crop_pct)]
    names = [p.name for p in paths]
    for name in SKIMAGE:
        arr = np.asarray(getattr(data, name)())
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, -1)
        img = resize_center_crop(Image.fromarray(arr[..., :3]).convert("RGB"), size, crop_pct)
        batch.append(torch.from_numpy(to_array(img)).permute(2, 0, 1)[None])
        names.append(f"skimage.{name}")
    return torch.cat(batch), names


def measure(steps: int = 128, threads: int = 2, seed: int = 0, per_layer: int = 5, progress: bool = True,
            precision: str = "auto"):
    """Rows: (layer, channel, best photo, photo max, rendered, ratio)."""
    torch.set_num_threads(threads)
    from vizsuite.optvis import channel, evaluate, render
    from vizsuite.zoo import load_model

    model = load_model("efficientnet_lite0")
    todo = units(model, per_layer)
    photos, names = photo_batch(model.input_size, model.spec.crop_pct)
    start = time.perf_counter()
    objective = [channel(layer, c) for layer, c in todo]
    result = render(model, objective, steps=steps, seed=seed, progress=progress, precision=precision)
    seconds = time.perf_counter() - start
    rendered = evaluate(model, objective, result.images)
    rows = []
    for i, (layer, c) in enumerate(todo):
        per_photo = evaluate(model, channel(layer, c), photos)
        best = int(per_photo.argmax())
        rows.append((layer, c, names[best], float(per_photo[best]), float(rendered[i]),
                     float(rendered[i]) / float(per_photo[best])))
    return rows, seconds, len(names), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "optvis_quality.md"))
    ap.add_argument("--precision", default="auto", help="render precision (auto, fp32, bf16)")
    ap.add_argument("--images", default=None, help="also save the rendered sheet here (PNG)")
    args = ap.parse_args()
    rows, seconds, n_photos, result = measure(args.steps, args.threads, args.seed, precision=args.precision)
    ratios = [r[5] for r in rows]
    above = sum(r > 1 for r in ratios)
    lines = [
        "# optvis quality: rendered image vs the best real photo (efficientnet_lite0)",
        "",
        f"Default recipe (fft + decorrelated colour, Adam lr 0.05, standard transforms), {args.steps} steps, "
        f"precision {result.precision} (--precision {args.precision}), "
        f"seed {args.seed}, all {len(rows)} units in one batch ({seconds:.0f} s on {args.threads} CPU thread(s)). "
        f"Activation = the channel's mean over positions on the plain image at 224 px (no transforms). "
        f"Photos: {n_photos} (galleries/photos + skimage samples).",
        "",
        f"**{above}/{len(rows)} units above their best photo; ratio min {min(ratios):.2f}, "
        f"median {statistics.median(ratios):.2f}, max {max(ratios):.2f}.**",
        "",
        "| layer | channel | best photo | photo max | rendered | ratio |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {l} | {c} | {n} | {p:.3f} | {r:.3f} | {q:.2f} |" for l, c, n, p, r, q in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.images:
        from vizsuite.images import contact_sheet, to_uint8

        Image.fromarray(contact_sheet([to_uint8(i) for i in result.images], 5)).save(args.images)


if __name__ == "__main__":
    main()
