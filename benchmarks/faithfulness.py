"""Pixel-flipping (deletion) AOPC per attribution method on efficientnet_lite0 over the shared photos.

    python benchmarks/faithfulness.py [--out benchmarks/results/faithfulness.md]

Each photo (224 px) is explained for its top-1 class; 16 px patches (14 x 14 grid) are replaced by
grey (0.5, the model's mean) in 20 equal steps, most relevant first. Higher AOPC = more faithful.
Random orderings (5 seeds per photo) give the floor.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = [
    ("saliency", "saliency", {}),
    ("gradient x input", "gradient_x_input", {}),
    ("integrated gradients (black, 64)", "integrated_gradients", {"steps": 64, "max_delta": None}),
    ("integrated gradients (blur, 64)", "integrated_gradients", {"steps": 64, "max_delta": None, "baseline": "blur"}),
    ("smoothgrad (saliency, 16)", "smoothgrad", {}),
    ("grad-cam (bn2)", "gradcam", {}),
    ("lrp epsilon_plus_flat", "lrp", {"composite": "epsilon_plus_flat"}),
    ("lrp epsilon_gamma_box", "lrp", {"composite": "epsilon_gamma_box"}),
    ("lrp epsilon_alpha2_beta1", "lrp", {"composite": "epsilon_alpha2_beta1"}),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faithfulness.md"))
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from vizsuite.attribution import attribute
    from vizsuite.attribution.faithfulness import deletion_curve, patch_order
    from vizsuite.images import find_images, load_batch
    from vizsuite.zoo import load_model

    model = load_model("efficientnet_lite0")
    paths = find_images(ROOT / "galleries" / "photos")
    x = load_batch(paths, 224)
    results = {}
    for label, method, opts in METHODS:
        start = time.perf_counter()
        res = attribute(model, x, "top1", method, **opts)
        aopcs = []
        for i in range(x.shape[0]):
            heat = res.attribution[i].sum(0)
            curve = deletion_curve(model, x[i], res.targets[i].index, patch_order(heat, 16))
            aopcs.append(curve.aopc)
        results[label] = (aopcs, time.perf_counter() - start)
        print(f"{label:36s} AOPC {sum(aopcs) / len(aopcs):.3f}  ({results[label][1]:.0f}s)", flush=True)
    rand = []
    targets = attribute(model, x, "top1", "saliency").targets
    for i in range(x.shape[0]):
        vals = [deletion_curve(model, x[i], targets[i].index,
                               patch_order(torch.zeros(224, 224), 16, torch.Generator().manual_seed(s))).aopc
                for s in range(args.seeds)]
        rand.append(sum(vals) / len(vals))
    results[f"random ordering ({args.seeds} seeds)"] = (rand, 0.0)
    names = [p.stem for p in paths]
    lines = ["# Faithfulness: pixel-flipping AOPC on efficientnet_lite0", "",
             "Deletion (most relevant first) of 16 px patches replaced by grey, 20 steps, 224 px photos from "
             "galleries/photos, top-1 class, target softmax probability. AOPC = mean drop in probability over the "
             "steps; higher is more faithful. Produced by `python benchmarks/faithfulness.py` (2 CPU threads).", "",
             "| method | mean AOPC | " + " | ".join(names) + " | seconds |",
             "|---|---|" + "---|" * len(names) + "---|"]
    for label, (aopcs, secs) in sorted(results.items(), key=lambda kv: -sum(kv[1][0])):
        lines.append(f"| {label} | **{sum(aopcs) / len(aopcs):.3f}** | " + " | ".join(f"{a:.3f}" for a in aopcs)
                     + f" | {secs:.0f} |")
    top1 = [f"{names[i]}: {t.label}" for i, t in enumerate(targets)]
    lines += ["", "Top-1 classes: " + "; ".join(top1) + ".", "",
              "Reading it: the deletion runs to 100 % of the image, so late steps (everything gone) weigh as much "
              "as early ones and the random floor is high; compare methods against that floor."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
