"""Benchmark: describe every unit of efficientnet_lite0 blocks.2 - blocks.6 with the sample photos.

    python benchmarks/describe.py [--layers blocks.2,...,blocks.6] [--views 16] [--causal 8] [--threads 2]

Per layer, in-process and from scratch (no task cache): tuning curves on the synthetic stimuli,
top classes over the photos, causal support (zero ablation on the photos), descriptions and
the simulation score on held-out crops (own description and the shuffled-label control).
Writes wall times and the mean correlations to benchmarks/results/describe.md. Target:
blocks.4 (112 units) under 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="blocks.2,blocks.3,blocks.4,blocks.5,blocks.6")
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--causal", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", default=str(ROOT / "galleries" / "photos"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "describe.md"))
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from vizsuite.capture import list_layers
    from vizsuite.describe.report import layer_summary
    from vizsuite.describe.stimuli import stimulus_set
    from vizsuite.images import find_images
    from vizsuite.tasks.describe import describe_layer
    from vizsuite.units import layer_units
    from vizsuite.zoo import load_model

    t0 = time.perf_counter()
    model = load_model("efficientnet_lite0")
    load_s = time.perf_counter() - t0
    channels = {i.name: i.channels for i in list_layers(model)}
    photos = len(find_images(args.images))
    rows = []
    for layer in args.layers.split(","):
        start = time.perf_counter()
        out = describe_layer(model, layer_units(layer, channels[layer]), images=args.images, views=args.views,
                             seed=0, causal=args.causal)
        seconds = time.perf_counter() - start
        s = layer_summary(out)[layer]
        described = sum(1 for d in out if d.confidence > 0)
        rows.append((layer, len(out), seconds, s["correlation"], s["control"], described,
                     float(np.mean([d.confidence for d in out]))))
        print(f"{layer}: {len(out)} units in {seconds:.1f}s, simulation r {s['correlation']:.3f} "
              f"(control {s['control']:.3f}), {described} with a claim", flush=True)
        for d in out[:3]:
            print(f"  {d.unit}: {d.description} ({d.confidence:.2f})", flush=True)
    lines = [
        "# Unit descriptions benchmark (efficientnet_lite0, sample photos)", "",
        f"`python benchmarks/describe.py` on {platform.machine()}, {args.threads} torch threads, "
        f"{photos} photos x {args.views} crops for the simulation, causal support on {args.causal} photos, "
        f"{len(stimulus_set(model.input_size))} synthetic stimuli at {model.input_size} px. The machine was shared "
        f"with other helpers' jobs while this ran (load average {os.getloadavg()[0]:.0f} on the 2 cores at the "
        f"end): wall times are upper bounds. Model load {load_s:.1f} s (not included). Each layer from scratch: "
        f"stimuli, the photos pass, the ablations, the crops.", "",
        "| layer | units | wall time | mean simulation r (own description) | control (another unit's) | units with a claim | mean confidence |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for layer, n, sec, r, c, described, conf in rows:
        lines.append(f"| {layer} | {n} | {sec / 60:.1f} min ({sec:.0f} s) | {r:.3f} | {c:.3f} | {described} | {conf:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
