"""Benchmark: a 20 x 20 activation atlas of efficientnet_lite0 over the sample photos.

    python benchmarks/atlas.py [--layer blocks.4] [--grid 20] [--steps 128] [--threads 2]

Runs the full pipeline in-process with a fresh task cache (collection, layout, class support,
icon renders, page), then a rerun that should reuse everything; writes the wall times and the
peak resident memory to benchmarks/results/atlas.md. Target: at most 20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks.4")
    ap.add_argument("--grid", type=int, default=20)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=96)
    ap.add_argument("--icon-size", type=int, default=80)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", default=str(ROOT / "galleries" / "photos"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "atlas.md"))
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from vizsuite.atlas import AtlasConfig, IconRecipe, build_atlas
    from vizsuite.images import find_images
    from vizsuite.zoo import load_model

    t0 = time.perf_counter()
    model = load_model("efficientnet_lite0")
    load_s = time.perf_counter() - t0
    paths = find_images(args.images)
    cfg = AtlasConfig(grid=args.grid, samples=args.samples, icon=IconRecipe(size=args.icon_size, steps=args.steps))
    # per-chunk render times come from the task records: they let a short run (--steps 16 on a
    # busy machine) be scaled to the default step count honestly
    with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
        site = Path(tmp) / "site"
        t1 = time.perf_counter()
        first = build_atlas(model, args.layer, paths, site, cfg, command=["benchmarks/atlas.py"])
        build_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        build_atlas(model, args.layer, paths, site, cfg, command=["benchmarks/atlas.py"])
        rerun_s = time.perf_counter() - t2
        import json

        records = [json.loads(p.read_text()) for p in (site / ".cache" / "tasks").glob("*/done.json")]
        icon_s = sum(r["seconds"] for r in records if r["kind"] == "atlas_icons")
        layout_s = sum(r["seconds"] for r in records if r["kind"] == "atlas_layout")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    load = os.getloadavg()
    lines = [
        "# Activation atlas benchmark",
        "",
        f"`python benchmarks/atlas.py` — efficientnet_lite0 `{args.layer}`, {args.grid} x {args.grid} grid, "
        f"{len(paths)} sample photos, up to {args.samples} samples, icons {args.icon_size} px x {args.steps} steps "
        f"(batched 16 per pass), {first['reduce']} layout, torch threads {args.threads}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| samples collected | {first['samples']} |",
        f"| cells with an icon (>= {cfg.min_count} samples) | {first['cells']} |",
        f"| model load | {load_s:.1f} s |",
        f"| first build (fresh cache) | {build_s:.0f} s ({build_s / 60:.1f} min) |",
        f"| of which: collect + {first['reduce']} layout | {layout_s:.1f} s |",
        f"| of which: icon renders ({args.steps} steps) | {icon_s:.0f} s |",
        f"| rest (class support, patches, page) | {build_s - icon_s - layout_s:.1f} s |",
        f"| icons scaled to 96 steps (render time is linear in steps) | "
        f"{(build_s - icon_s + icon_s * 96 / args.steps) / 60:.1f} min total |",
        f"| rerun (everything cached) | {rerun_s:.1f} s |",
        f"| peak resident memory | {peak_mib:.0f} MiB |",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min). The CPU was "
        "shared with other work while this ran, so times are upper bounds for an idle machine. "
        "Target: at most 20 minutes on 2 cores.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
