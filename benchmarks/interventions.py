"""Exact ablation effects: vizsuite vs captum's LayerFeatureAblation, one feature per channel.

    python benchmarks/interventions.py [--images N] [--inception-images N] [--out benchmarks/results/interventions.md]

Every channel of efficientnet_lite0 `blocks.5` (pretrained) and InceptionV1 `mixed4a` (random
weights) is zero-ablated on the sample photos; the target is each photo's top-1 class logit.
Same process, same images, same target, one thread. captum runs on the model as loaded, with
`layer_mask` giving each channel its own feature (1 x C x 1 x 1) and zero baselines; vizsuite
runs `ablation_effects` (its frozen inference copy, the part below the layer at batch 1 under
the stacked ablated copies). Reported: max |difference| of the effects (captum's attribution is
intact minus ablated, so effect = -attribution), CPU and wall time, speed ratio, and the
first-order estimate's Spearman rank correlation with the exact effects.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREADS = 1  # shared CPUs: one thread keeps OpenMP spin-waits out of the CPU times


def photos(n: int, size: int, crop: float) -> tuple[list, torch.Tensor]:
    from vizsuite.images import find_images, load_batch

    paths = find_images(ROOT / "galleries" / "photos")
    paths = (paths * ((n + len(paths) - 1) // len(paths)))[:n]
    return [p.name for p in paths], load_batch(paths, size, crop)


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


class _Tapped(torch.nn.Module):
    """A module whose input is a list (InceptionV1's Concat) followed by an Identity: captum's
    layer hooks read `inputs[0].device` and fail on a list input, so captum is given the
    Identity, whose input and output are the concatenation (same values, same forward)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.out = inner, torch.nn.Identity()

    def forward(self, x):
        return self.out(self.inner(x))


def captum_view(model, layer: str):
    """(model, module) for captum: the model itself, or a copy with the layer tapped (see _Tapped)."""
    import copy

    from vizsuite.hooks import resolve

    module = resolve(model, layer)
    if "Concat" not in type(module).__name__:
        return model, module
    tapped = copy.deepcopy(model)
    parent = tapped.net
    *path, last = layer.split(".")
    for part in path:
        parent = getattr(parent, part)
    wrapper = _Tapped(getattr(parent, last))
    setattr(parent, last, wrapper)
    return tapped, wrapper.out


def captum_effects(model, layer: str, x: torch.Tensor, classes: list[int], per_eval: int) -> np.ndarray:
    from captum.attr import LayerFeatureAblation

    from vizsuite.hooks import activations

    c = activations(model, x[:1], [layer])[layer].shape[1]
    model, module = captum_view(model, layer)
    mask = torch.arange(c).view(1, c, 1, 1)
    abl = LayerFeatureAblation(model, module)
    rows = []
    with torch.no_grad():  # one image per call: captum 0.9 rejects a target list with perturbations_per_eval > 1
        for i, cls in enumerate(classes):
            attr = abl.attribute(x[i:i + 1], target=int(cls), layer_mask=mask, perturbations_per_eval=per_eval)
            rows.append(-attr[0, :, 0, 0].double().numpy())   # captum: intact - ablated
    return np.stack(rows)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "n/a"


def bench(name: str, model, layer: str, n: int, per_evals: list[int], rows: list, notes: list) -> None:
    from vizsuite.interventions import ablation_effects

    names, x = photos(n, model.input_size, model.spec.crop_pct)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    load_before = uptime()
    fx, wall, cpu = timed(lambda: ablation_effects(model, layer, x, "top1"))
    assert [int(c) for c in fx.classes] == classes
    fx_rep, wall_rep, cpu_rep = timed(lambda: ablation_effects(model, layer, x, "top1", below="repeat"))
    units = len(fx.units)
    rows.append([name, layer, units, n, "vizsuite (below at batch 1)", f"{cpu:.1f}", f"{wall:.1f}", "-", "-", "-",
                 f"{fx.rank_correlation:.3f}", f"{fx.rank_correlation_per_image:.3f}"])
    rows.append([name, layer, units, n, "vizsuite (below repeated)", f"{cpu_rep:.1f}", f"{wall_rep:.1f}", "-",
                 "-", f"{np.abs(fx_rep.exact - fx.exact).max():.1e}", "", ""])
    for k in per_evals:
        ref, cwall, ccpu = timed(lambda: captum_effects(model, layer, x, classes, k))
        diff = np.abs(ref - fx.exact).max()
        rows.append([name, layer, units, n, f"captum LayerFeatureAblation (perturbations_per_eval={k})",
                     f"{ccpu:.1f}", f"{cwall:.1f}", f"{ccpu / cpu:.1f}x", f"{cwall / wall:.1f}x", f"{diff:.1e}",
                     "", ""])
        print(rows[-1], flush=True)
    notes.append(f"{name}: load before the run `{load_before}`; after `{uptime()}`; "
                 f"broadcast check passed: {fx.broadcast}; largest |effect| {np.abs(fx.exact).max():.3g}; "
                 f"photos: {', '.join(names)}; top-1 classes {classes}")


NOTES = "Notes. captum runs on the model as loaded, vizsuite on its batch-norm-folded frozen copy: the efficientnet_lite0 differences (< 1e-5 on effects up to 2.4 logits) are that fold's rounding; the two vizsuite paths agree exactly. InceptionV1 has random weights, so its effects are tiny (largest 3e-5): the 2e-8 difference is about 1e-3 of them. captum cannot hook InceptionV1's `mixed4a` (a Concat module whose input is a list; captum 0.9 reads `inputs[0].device`), so it gets a copy with an Identity after the Concat (same values). captum runs one image per call (its target list is rejected with perturbations_per_eval > 1). A unit whose ablation changes nothing (a channel that is zero on the image: about 20% of mixed4a's channels per photo) has effect exactly 0 and is not run; the naive loop agrees."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8, help="photos for efficientnet_lite0 (default 8)")
    ap.add_argument("--inception-images", type=int, default=2, help="photos for InceptionV1 (default 2)")
    ap.add_argument("--per-eval", default="1,16", help="captum perturbations_per_eval values (default 1,16)")
    ap.add_argument("--skip-inception", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "interventions.md"))
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    import captum

    from vizsuite.zoo import load_model

    per_evals = [int(v) for v in args.per_eval.split(",")]
    rows, notes = [], []
    bench("efficientnet_lite0", load_model("efficientnet_lite0"), "blocks.5", args.images, per_evals, rows, notes)
    if not args.skip_inception:
        bench("inceptionv1 (random weights)", load_model("inceptionv1", random_weights=True), "mixed4a",
              args.inception_images, per_evals, rows, notes)
    head = ["model", "layer", "channels", "images", "method", "CPU s", "wall s", "captum / vizsuite CPU",
            "captum / vizsuite wall", "max abs diff vs vizsuite", "estimate rank corr. (mean effects)",
            "estimate rank corr. (per image, mean)"]
    lines = ["# Ablation effects benchmark: vizsuite vs captum LayerFeatureAblation", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs, torch {torch.__version__}, "
             f"captum {captum.__version__}, {THREADS} thread. One run of each (captum takes minutes; repeats would "
             f"not fit the shared machine), same process, same images and targets (each photo's top-1 class "
             f"logit), zero ablation of every channel. Run `python benchmarks/interventions.py`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    lines += ["", "Load (`uptime`) around each model's runs (CPU times are the fairer ratio: other jobs stretch "
              "wall time):", ""] + [f"- {n}" for n in notes]
    lines += ["", "vizsuite's time includes making its frozen inference copy and the once-per-call check of the "
              "batch-1 shortcut. `below repeated` is the same engine with the part below the layer run on the "
              "image repeated once per ablated copy (exact by construction): the shortcut's speed-up and its "
              "agreement. The rank correlation is Spearman's, over channels, between the first-order estimate "
              "(gradient x (ablated - actual), one backward per image batch) and the exact effects.", "", NOTES]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
