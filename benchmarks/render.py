"""Speed and strength of feature visualization: vizsuite.optvis.render vs torch-lucent render_vis.

    python benchmarks/render.py [--steps 128] [--threads 2] [--precision fp32,bf16] [--seeds 0,1,2]
                                [--peers /tmp/vizsuite-peers/bin/python]

Same model weights, layer, units, steps, image size (224 parameter image), thread count, on the
CPU. Each engine runs in its own interpreter (lucent lives in the peers venv with older kornia);
the images both return are scored by one evaluator here: the unit's mean activation on the
plain image at the model's input size (no transforms). Writes benchmarks/results/render.md.
Both engines use their defaults otherwise (fft + decorrelated colour, Adam lr 0.05, their own
standard transforms). vizsuite runs once per --precision (fp32, and bf16 autocast for the
forward pass), against the same lucent run; the table is rewritten after every row so an
interrupted run keeps what it measured. With several --seeds, each engine renders every row once
per seed (lucent's numpy RNG, which draws its transforms, seeded too) and the table reports the
mean seconds and, per unit, the mean activation over the seeds: one seed's activation moves by a
few percent (lucent's InceptionV1 16-unit mean: 0.46 in one run, 0.48 in another).
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

# OpenMP waiting policy, set before torch loads and inherited by the lucent subprocess, so both
# engines run under the same one. On a shared machine, workers that spin-wait at every barrier
# starve each other and the other tenants (measured: 2 threads under load 7 took 4.4 s per step
# instead of 0.09 s), so --omp-passive exists for such machines; on a quiet machine passive
# waiting costs both engines (a batch-1 efficientnet render step: 30 ms default, 45 ms passive),
# so the default leaves OpenMP's own policy.
if "--omp-passive" in sys.argv:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = [  # (model, lucent layer path, our layer, units)
    ("efficientnet_lite0", "net_blocks_4", "blocks.4", list(range(0, 112, 7))[:16]),
    ("inceptionv1", "mixed4a", "mixed4a", list(range(0, 508, 31))[:16]),
]

PEER = r'''
import json, sys, time
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
units, layer = cfg["units"], cfg["layer"]
if len(units) == 1:
    obj = objectives.channel(layer, units[0])
else:
    obj = sum(objectives.channel(layer, u, batch=i) for i, u in enumerate(units))
torch.manual_seed(cfg["seed"])
t = time.perf_counter()
imgs = render.render_vis(model, obj, param_f=lambda: param.image(cfg["size"], batch=len(units)),
                         thresholds=(cfg["steps"],), show_image=False, progress=False,
                         preprocess=preprocess)
sec = time.perf_counter() - t
np.save(cfg["out"], imgs[-1])
print(json.dumps({"seconds": sec}))
'''


def run_lucent(peers, cfg):
    out = subprocess.run([peers, "-c", PEER, json.dumps(cfg)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    sec = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    imgs = torch.from_numpy(np.load(cfg["out"])).permute(0, 3, 1, 2).float()
    return sec, imgs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", default="0", help="comma list of seeds; rows report means over them")
    ap.add_argument("--peers", default="/tmp/vizsuite-peers/bin/python")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--precision", default="fp32,bf16", help="comma list of vizsuite precisions to time")
    ap.add_argument("--models", default=",".join(c[0] for c in CASES), help="comma list of models")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "render.md"))
    ap.add_argument("--omp-passive", action="store_true",
                    help="OMP_WAIT_POLICY=PASSIVE for both engines (use on a shared, loaded machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from vizsuite.optvis import channel, evaluate, render
    from vizsuite.zoo import load_model

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="vizsuite-bench-"))
    load0 = os.getloadavg()[0]
    precisions = [p for p in args.precision.split(",") if p]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    for name, peer_layer, layer, units in CASES:
        if name not in args.models.split(","):
            continue
        model = load_model(name, random_weights=(name == "inceptionv1"))
        weights = tmp / f"{name}.pt"
        torch.save(model.net.state_dict(), weights)
        for k in (1, args.batch):
            us = units[:k]
            objective = [channel(layer, u) for u in us] if k > 1 else channel(layer, us[0])
            lucent = []  # (seconds, per-unit activation) per seed
            ours = {p: [] for p in precisions}
            for seed in seeds:
                cfg = dict(model=name, layer=peer_layer, units=us, steps=args.steps, size=args.size,
                           threads=args.threads, seed=seed, weights=str(weights), out=str(tmp / "l.npy"))
                lsec, limgs = run_lucent(args.peers, cfg)
                lucent.append((lsec, evaluate(model, objective, limgs)))
                for precision in precisions:
                    res = render(model, objective, steps=args.steps, size=args.size, seed=seed, progress=False,
                                 precision=precision)
                    ours[precision].append((res.seconds, evaluate(model, objective, res.images)))  # fp32 scoring
            lsec = sum(t for t, _ in lucent) / len(seeds)
            lucent_act = torch.stack([a for _, a in lucent]).mean(0)
            for precision in precisions:
                osec = sum(t for t, _ in ours[precision]) / len(seeds)
                ours_act = torch.stack([a for _, a in ours[precision]]).mean(0)
                rows.append(dict(model=name, layer=layer, k=k, steps=args.steps, size=args.size,
                                 precision=precision, ours_s=osec, lucent_s=lsec,
                                 ours_uph=3600 * k / osec, lucent_uph=3600 * k / lsec,
                                 ours_act=float(ours_act.mean()), lucent_act=float(lucent_act.mean()),
                                 wins=int((ours_act >= lucent_act).sum()), load=os.getloadavg()[0],
                                 seeds=len(seeds)))
                print(json.dumps(rows[-1]), flush=True)
                write_table(rows, args, load0, os.getloadavg()[0], quiet=True)
    write_table(rows, args, load0, os.getloadavg()[0])


def write_table(rows, args, load0, load1, quiet=False):
    best_lucent = {}
    for r in rows:
        best_lucent[r["model"]] = max(best_lucent.get(r["model"], 0), r["lucent_uph"])
    lines = [
        "# render: vizsuite vs torch-lucent 0.1.8",
        "",
        f"CPU, {args.threads} threads, {args.steps} steps, {args.size} px parameter image, seeds {args.seeds} "
        f"(seconds and each unit's activation: means over the seeds). "
        f"Activation = mean channel activation of the returned image at the model's input size, no "
        f"transforms, scored by the same code for both engines (mean over the units of the row). "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (OpenMP default)')} for both engines. "
        f"Load average {load0:.1f} at start, {load1:.1f} at end (lucent and vizsuite alternate within "
        f"one run, so compare them row by row). vizsuite renders on its inference copy (batch norms "
        f"folded, channels_last weights); precision bf16 = bf16 autocast forward.",
        "",
        "| model | layer | units at once | vizsuite precision | vizsuite s | lucent s | vizsuite units/h | "
        "lucent units/h | speed-up | vs lucent's best mode | vizsuite act. | lucent act. | "
        "units where vizsuite >= lucent | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['layer']} | {r['k']} | {r['precision']} | {r['ours_s']:.1f} | {r['lucent_s']:.1f} | "
            f"{r['ours_uph']:.0f} | {r['lucent_uph']:.0f} | {r['ours_uph'] / r['lucent_uph']:.1f}x | "
            f"{r['ours_uph'] / best_lucent[r['model']]:.1f}x | {r['ours_act']:.2f} | {r['lucent_act']:.2f} | "
            f"{r['wins']}/{r['k']} | {r['load']:.1f} |")
    lines += ["", "InceptionV1 uses random weights (identical state dict in both engines); "
              "efficientnet_lite0 the real weights.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    if not quiet:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
