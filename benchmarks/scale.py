"""Benchmark: one gallery build locally (1 and 2 processes) and on a local Ray instance with 2
workers, on this machine's cores; Ray's overhead per task; extrapolation to N workers.

    python benchmarks/scale.py [--layer blocks.4] [--units 8] [--steps 32]

Each build runs in a fresh site (nothing reused) as one `vizsuite gallery` CLI call, so the
times include start-up (Ray's included). Per-task compute time is read from the tasks' own
done records. The extrapolation to N workers (total task time / N plus the measured fixed
cost) is an estimate, stated as one. Writes benchmarks/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(args, site: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "vizsuite", "gallery", "efficientnet_lite0", "--layers", args.layer,
           "--units", str(args.units), "--images", str(ROOT / "galleries" / "photos"), "--steps", str(args.steps),
           "--quiet", "-o", str(site), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"build failed ({' '.join(extra)}): {proc.stderr.strip().splitlines()[-1:]}")
    records = [json.loads(p.read_text()) for p in (site / ".cache" / "tasks").glob("*/done.json")]
    return {"wall": wall, "tasks": len(records), "task_seconds": sum(float(r["seconds"]) for r in records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks.4")
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.md"))
    args = ap.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        for name, extra in (("local, 1 process", []), ("local, 2 processes", ["--jobs", "2"]),
                            ("Ray, local instance (1 worker x 2 threads)", ["--executor", "ray"])):
            runs[name] = build(args, Path(tmp) / name.replace(" ", "_").replace(",", ""), extra)
    base = runs["local, 1 process"]
    ray_run = runs["Ray, local instance (1 worker x 2 threads)"]
    overhead = (ray_run["wall"] - base["wall"]) / max(ray_run["tasks"], 1)
    load = os.getloadavg()
    lines = [f"# Scale-out benchmark: one gallery build, local vs Ray", "",
             f"efficientnet_lite0 `{args.layer}`, {args.units} units, {args.steps} steps, dataset examples over the "
             f"sample photos; {os.cpu_count()} cores, {platform.machine()}; load average before the last run "
             f"{load[0]:.1f}. Each build is one CLI call into a fresh site (start-up included).", "",
             "| run | wall time | tasks | summed task time |", "|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['wall']:.1f} s | {r['tasks']} | {r['task_seconds']:.1f} s |")
    lines += ["", f"Ray's overhead over the local in-process build: {overhead:+.2f} s per task "
              f"({ray_run['wall'] - base['wall']:+.1f} s in all, mostly starting the local Ray instance).", "",
              "Estimate for N workers (not measured): wall ~ summed task time / N + fixed start-up:"]
    fixed = max(ray_run["wall"] - ray_run["task_seconds"], 0.0)  # one worker here (2 cores, 2 threads each)
    lines += ["", f"(fixed start-up measured here: {fixed:.1f} s; each worker runs tasks on 2 threads, so a "
              "2-core machine holds one; `--jobs 2` here runs 4 threads on 2 cores, hence its time)",
              "", "| workers | estimated wall time |", "|---|---|"]
    for n in (2, 8, 32, 128):
        lines.append(f"| {n} | {ray_run['task_seconds'] / n + fixed:.0f} s |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
