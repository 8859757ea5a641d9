"""Render a sheet of efficientnet_lite0 channel visualizations (early, middle, late layers).

    python benchmarks/optvis_sheet.py [--steps 192] [--threads 2] [--out docs/images/optvis_sheet.png]

Uses the default recipe (fft + decorrelated colour, Adam lr 0.05, standard transforms); all
units of the sheet are optimized in one batch (per_image objective), so one seed replays it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vizsuite.images import contact_sheet, to_uint8
from vizsuite.optvis import channel, render
from vizsuite.zoo import load_model

ROOT = Path(__file__).resolve().parents[1]
UNITS = [("blocks.1", 3), ("blocks.1", 10), ("blocks.2", 5), ("blocks.2", 17),
         ("blocks.3", 8), ("blocks.3", 40), ("blocks.4", 12), ("blocks.4", 60),
         ("blocks.5", 7), ("blocks.5", 100), ("blocks.6", 30), ("blocks.6", 200)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=192)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--decay-power", type=float, default=1.0)
    ap.add_argument("--transforms", default="standard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "optvis_sheet.png"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("efficientnet_lite0")
    start = time.perf_counter()
    result = render(model, [channel(layer, c) for layer, c in UNITS], steps=args.steps, size=args.size,
                    lr=args.lr, decay_power=args.decay_power, transforms=args.transforms, seed=args.seed)
    print(f"{len(UNITS)} units, {args.steps} steps: {time.perf_counter() - start:.0f} s")
    tiles = []
    for (layer, c), img in zip(UNITS, result.images):
        tile = Image.fromarray(to_uint8(img))
        canvas = Image.new("RGB", (tile.width, tile.height + 16), "white")
        canvas.paste(tile, (0, 16))
        ImageDraw.Draw(canvas).text((4, 2), f"{layer}:{c}", fill="black")
        tiles.append(np.asarray(canvas))
    sheet = contact_sheet(tiles, columns=4, pad=4)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
