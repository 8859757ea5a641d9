"""Benchmark: a whole efficientnet_lite0 layer as a gallery, with dataset examples.

    python benchmarks/gallery.py [--layer blocks.4] [--threads 2] [--jobs 1] [--steps N]

Builds every channel of LAYER (main, negative, diversity set, circuits, supported classes,
dataset examples over galleries/photos) into a fresh site with the default recipe, in a child
process whose peak resident memory is read from getrusage; then reruns it (all reused).
Writes benchmarks/results/gallery.md. Target: <= 30 minutes and <= 3 GiB on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"gallery build failed: {proc.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start, proc.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks.4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's steps (default: recipe)")
    ap.add_argument("--images", default=str(ROOT / "galleries" / "photos"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gallery.md"))
    args = ap.parse_args()

    from vizsuite.tasks.renders import DEFAULT_RECIPE

    with tempfile.TemporaryDirectory(prefix="gallery-bench-") as tmp:
        site = Path(tmp) / "site"
        code = ("import sys, torch; torch.set_num_threads(%d); from vizsuite.cli import main; "
                "sys.exit(main(sys.argv[1:]))" % args.threads)
        cmd = [sys.executable, "-c", code, "gallery", "efficientnet_lite0", "--layers", args.layer, "--units", "all",
               "--images", args.images, "--jobs", str(args.jobs), "--quiet", "-o", str(site)]
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        first, summary = run(cmd)
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        again, summary2 = run(cmd)
        records = [json.loads(p.read_text()) for p in (site / ".cache" / "tasks").glob("*/done.json")]
        by_kind: dict[str, float] = {}
        for r in records:
            by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + float(r["seconds"])
        pages = len(list((site / "neurons").rglob("*.html")))
    recipe = {**DEFAULT_RECIPE, **({"steps": args.steps} if args.steps else {})}
    lines = [
        "# Gallery benchmark: a whole efficientnet_lite0 layer",
        "",
        f"Layer `{args.layer}`, all channels ({pages} neuron pages), dataset examples over "
        f"{len(list(Path(args.images).iterdir()))} sample photos, recipe {json.dumps(recipe)}, "
        f"{args.threads} torch threads, --jobs {args.jobs}, {platform.processor() or platform.machine()}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| first build | {first / 60:.1f} min ({summary}) |",
        f"| rerun (all reused) | {again:.1f} s |",
        f"| peak resident memory | {peak_kib / 1024 / 1024:.2f} GiB |",
    ]
    lines += [f"| task time: {k} | {v / 60:.1f} min |" for k, v in sorted(by_kind.items())]
    lines += ["", "Targets: at most 30 minutes and 3 GiB on 2 cores."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
