"""Render speed, end to end and per image-step, vs torch-lucent render_vis (issue 19).

    python benchmarks/render.py [--quick] [--steps 64] [--threads 2] [--cases inception8,effnet1,effnet16]
                                [--peers /tmp/vizsuite-peers/bin/python] [--out benchmarks/results/render.md]

Workloads (CASES): 8 InceptionV1 `mixed4a` units (random weights, seeded: the same state dict
in both engines), 128 px image fed at 224 px; efficientnet_lite0 `blocks.4` with 1 and with 16
units, 224 px. Per workload:
  end to end   one `vizsuite render` CLI call (all units, its default batching; --precision auto
               = the default, and fp32) vs one lucent interpreter rendering the units one by
               one (render_vis per unit, as lucent is used): wall seconds from process start to
               exit, imports, model build and writing included.
  per step     vizsuite: median steady-state step of what render runs (benchmarks/render_step.py),
               per image; lucent: its render_vis seconds / steps / units.
  floor        the step's FLOPs (forward + input-gradient backward, flop_counter) over the GEMM
               rate measured in this run in the precision used.
  activation   each unit's mean channel activation on the returned image (as an 8-bit PNG, both
               engines), plain, at 224 px, scored in fp32 by the same code.
Both engines run with OMP threads = --threads. The machine's load average is recorded before and
after: on a shared machine absolute times inflate, the side-by-side ratios of one run much less.
--quick: 16 steps, the InceptionV1 and 1-unit efficientnet workloads, 4 timed steps (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# the GEMM rates for this machine (fp32 ~187, bf16 ~416 GFLOP/s, 2 threads, 2026-12-01):
# its floor of the InceptionV1 step (3.9 GFLOP) is 21 ms in fp32 and 9.4 ms in bf16
NOMINAL = {torch.float32: 187.0, torch.bfloat16: 416.0}

CASES = {  # name: (model, lucent layer, our layer, units, image px)
    "inception8": ("inceptionv1", "mixed4a", "mixed4a", list(range(0, 508, 31))[:8], 128),
    "effnet1": ("efficientnet_lite0", "net_blocks_4", "blocks.4", [0], 224),
    "effnet16": ("efficientnet_lite0", "net_blocks_4", "blocks.4", list(range(0, 112, 7))[:16], 224),
}

PEER = r'''
import json, sys, time
t0 = time.perf_counter()
import numpy as np, torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
import random
random.seed(cfg["seed"])
np.random.seed(cfg["seed"])   # lucent draws its jitter, scale and rotation from numpy
from lucent.optvis import render, param, objectives
if cfg["model"] == "inceptionv1":
    from lucent.modelzoo import inceptionv1
    model = inceptionv1(pretrained=False)
    model.load_state_dict(torch.load(cfg["weights"]))
    preprocess = True        # lucent adds its InceptionV1 preprocessing (x * 255 - 117)
else:
    import timm
    class Wrap(torch.nn.Module):   # efficientnet_lite0 takes (x - 0.5) / 0.5
        def __init__(self, net):
            super().__init__(); self.net = net
        def forward(self, x):
            return self.net((x - 0.5) / 0.5)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    net.load_state_dict(torch.load(cfg["weights"]))
    model = Wrap(net)
    preprocess = False
model.eval()
torch.manual_seed(cfg["seed"])
images, render_s = [], 0.0
for u in cfg["units"]:   # unit by unit, as lucent renders
    t = time.perf_counter()
    out = render.render_vis(model, objectives.channel(cfg["layer"], u),
                            param_f=lambda: param.image(cfg["size"]), thresholds=(cfg["steps"],),
                            show_image=False, progress=False, preprocess=preprocess)
    render_s += time.perf_counter() - t
    images.append(out[-1][0])
np.save(cfg["out"], np.stack(images))
print(json.dumps({"render_seconds": render_s, "in_process_seconds": time.perf_counter() - t0}))
'''


def _env(threads: int) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}


def run_lucent(peers: str, cfg: dict, threads: int):
    t = time.perf_counter()
    out = subprocess.run([peers, "-c", PEER, json.dumps(cfg)], capture_output=True, text=True, env=_env(threads))
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    info = json.loads(out.stdout.strip().splitlines()[-1])
    imgs = torch.from_numpy(np.load(cfg["out"])).permute(0, 3, 1, 2).float()
    imgs = torch.round(imgs.clamp(0, 1) * 255) / 255  # as an 8-bit PNG, like vizsuite's files
    return wall, info["render_seconds"], imgs


def run_cli(model: str, layer: str, units, steps: int, size: int, precision: str, threads: int, out: Path):
    from vizsuite.images import load_image

    argv = [sys.executable, "-m", "vizsuite", "render", model, *[f"{layer}:{u}" for u in units],
            "--steps", str(steps), "--size", str(size), "--precision", precision, "--seed", "0",
            "--batch-size", "16", "-o", str(out), "--quiet"]
    if model == "inceptionv1":
        argv.append("--random-weights")
    t = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=_env(threads))
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    items = json.loads((out / "manifest.json").read_text())["items"]
    imgs = torch.stack([torch.as_tensor(np.asarray(load_image(out / i["file"]).convert("RGB"), dtype=np.float32) / 255)
                        .permute(2, 0, 1) for i in items])
    return wall, items[0]["precision"], imgs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="16 steps, inception8 + effnet1, 4 timed steps")
    ap.add_argument("--steps", type=int, default=None, help="render steps (default 64; --quick 16)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=None, help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--timed-steps", type=int, default=None, help="steps timed for the per-step medians")
    ap.add_argument("--peers", default="/tmp/vizsuite-peers/bin/python")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "render.md"))
    args = ap.parse_args()
    steps = args.steps or (16 if args.quick else 64)
    cases = (args.cases or ("inception8,effnet1" if args.quick else ",".join(CASES))).split(",")
    timed = args.timed_steps or (4 if args.quick else 10)
    torch.set_num_threads(args.threads)

    from render_step import GemmClock, Step
    from vizsuite.memory import keep_freed_memory

    keep_freed_memory().__enter__()     # the per-step timing runs as render's loop does
    from vizsuite.optvis import channel, evaluate
    from vizsuite.optvis.render import DTYPES
    from vizsuite.zoo import load_model

    load0, start = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tmp = Path(tempfile.mkdtemp(prefix="vizsuite-bench-"))
    rows = []
    for case in cases:
        name, peer_layer, layer, units, size = CASES[case]
        model = load_model(name, random_weights=(name == "inceptionv1"))
        weights = tmp / f"{name}.pt"
        torch.save(model.net.state_dict(), weights)
        objective = [channel(layer, u) for u in units]
        cfg = dict(model=name, layer=peer_layer, units=units, steps=steps, size=size, threads=args.threads,
                   seed=0, weights=str(weights), out=str(tmp / "l.npy"))
        l_wall, l_render, l_imgs = run_lucent(args.peers, cfg, args.threads)
        l_act = evaluate(model, objective, l_imgs)
        row = dict(case=case, model=name, layer=layer, units=len(units), steps=steps, size=size,
                   lucent_wall=l_wall, lucent_step_ms=1000 * l_render / steps / len(units),
                   lucent_act=float(l_act.mean()), modes={})
        for precision in ("auto", "fp32"):
            wall, used, imgs = run_cli(name, layer, units, steps, size, precision, args.threads,
                                       tmp / f"{case}-{precision}")
            act = evaluate(model, objective, imgs)
            row["modes"][precision] = dict(precision=used, wall=wall, act=float(act.mean()),
                                           wins=int((act >= l_act).sum()))
        # per image-step: the steady-state step of each precision, interleaved in this process
        steppers = {p: Step(model, layer, len(units), size, p) for p in ("auto", "fp32")}
        flops = {p: s.flops() for p, s in steppers.items()}
        for s in steppers.values():
            s.run(record=False)
        clock = GemmClock()     # the GEMM rate timed between the steps, its median
        for _ in range(timed):
            for s in steppers.values():
                s.run()
            clock.tick()
        rates = clock.rates()
        for p, s in steppers.items():
            dt = DTYPES[s.precision]
            m = row["modes"][p]
            m["step_ms"] = 1000 * s.medians()["step"] / len(units)
            m["floor_ms"] = 1000 * flops[p] / (rates[dt] * 1e9) / len(units)
            m["nominal_floor_ms"] = 1000 * flops[p] / (NOMINAL[dt] * 1e9) / len(units)
            m["gflop"] = flops[p] / len(units) / 1e9
            m["gemm"] = rates[dt]
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(rows, args, steps, load0, os.getloadavg(), start)


def write(rows, args, steps, load0, load1, start) -> None:
    lines = [
        "# render: vizsuite vs torch-lucent 0.1.8 (issue 19)",
        "",
        f"Run {start}, `python benchmarks/render.py{' --quick' if args.quick else ''}` ({steps} steps, "
        f"{args.threads} threads for both engines, seed 0). Load average (1/5/15 min) "
        f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} before, {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} after"
        f"{' -- a SHARED, LOADED machine: absolute times are inflated; compare within a row' if load0[0] > 1.5 or load1[0] > 2.5 else ''}.",
        "",
        "End to end = wall seconds of one `vizsuite render` call for all units vs one lucent interpreter "
        "rendering them unit by unit (imports, model build, writing included). Per image-step: vizsuite's "
        "median steady-state step / units; lucent's render_vis seconds / steps / units. Floor: the step's "
        "FLOPs (flop_counter) over a GEMM rate in the precision used: in-run = the median of 1024^3 matmuls "
        "timed between the timed steps; issue = the issue's rates for this machine (fp32 187, bf16 416 "
        "GFLOP/s). Activation: mean channel "
        "activation of the 8-bit image at 224 px, same scorer for both.",
        "",
        "| workload | vizsuite precision | vizsuite end to end s | lucent end to end s | speed-up | "
        "vizsuite ms / image-step | lucent ms / image-step | per-step speed-up | GFLOP / image-step | "
        "in-run floor ms (GEMM GFLOP/s) | vs in-run floor | issue floor ms | vs issue floor | vizsuite act. | "
        "lucent act. | units >= lucent | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for p, m in r["modes"].items():
            lines.append(
                f"| {r['model']} {r['layer']}, {r['units']} unit(s), {r['size']} px | {p} -> {m['precision']} | "
                f"{m['wall']:.1f} | {r['lucent_wall']:.1f} | {r['lucent_wall'] / m['wall']:.1f}x | "
                f"{m['step_ms']:.1f} | {r['lucent_step_ms']:.1f} | {r['lucent_step_ms'] / m['step_ms']:.1f}x | "
                f"{m['gflop']:.2f} | {m['floor_ms']:.1f} ({m['gemm']:.0f}) | {m['step_ms'] / m['floor_ms']:.2f}x | "
                f"{m['nominal_floor_ms']:.1f} | {m['step_ms'] / m['nominal_floor_ms']:.2f}x | "
                f"{m['act']:.3f} | {r['lucent_act']:.3f} | {m['wins']}/{r['units']} | {r['load']:.1f} |")
    lines += ["", "Targets (issue 19): >= 5x lucent end to end on the 8-unit InceptionV1 run; per image-step "
              "<= 1.5x the floor of the precision used; activation >= lucent's.", ""]
    for r in rows:
        for p, m in r["modes"].items():
            lines.append(f"- {r['case']} {p} ({m['precision']}): end to end {r['lucent_wall'] / m['wall']:.1f}x "
                         f"({'met' if r['lucent_wall'] / m['wall'] >= 5 else 'NOT met'} for >= 5x); "
                         f"{m['step_ms'] / m['nominal_floor_ms']:.2f}x the issue's floor "
                         f"({'met' if m['step_ms'] / m['nominal_floor_ms'] <= 1.5 else 'NOT met'}), "
                         f"{m['step_ms'] / m['floor_ms']:.2f}x the in-run floor "
                         f"({'met' if m['step_ms'] / m['floor_ms'] <= 1.5 else 'NOT met'}); activation "
                         f"{m['act']:.3f} vs {r['lucent_act']:.3f} "
                         f"({'met' if m['act'] >= r['lucent_act'] else 'NOT met'})")
    lines.append("")
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    notes = old[old.index("## Notes"):] if "## Notes" in old else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + ("\n" + notes if notes else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
