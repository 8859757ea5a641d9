"""TCAV: vizsuite vs captum's TCAV, same CAV backend, same images, one process.

    python benchmarks/concepts.py [--count 20] [--pool 60] [--runs 10] [--method mean]
                                  [--out benchmarks/results/concepts.md]

efficientnet_lite0 (pretrained), 3 layers, 2 generated concepts (`vizsuite concepts make`:
stripes_90, dots), 2 classes (zebra, tabby) tested on the sample photos, 10 random runs drawn
from one generated noise pool, the random-vs-random null runs, flattened activations (captum's
convention: `representation="flat"`). captum gets vizsuite's CAV trainer (`train_cav`, same
method, same seeds, same splits) through its `Classifier` interface, one Concept per random set,
`LayerGradientXActivation(multiply_by_inputs=False)` (its default). captum runs the model as
loaded; vizsuite its default, the batch-norm-folded frozen copy (`capture.frozen_copy`), so the
score difference also checks that the fold leaves the gradients' signs alone. Reported: CPU and
wall time of each side, the ratio, and the largest difference of the TCAV scores (per run,
concept and null) and of the p-values.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
THREADS = 1  # shared CPUs: one thread keeps OpenMP spin-waits out of the CPU times


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


class Batches:
    """A re-iterable data iterator of image batches, loaded when iterated (as captum's examples do)."""

    def __init__(self, paths, size, crop, batch=16):
        self.paths, self.size, self.crop, self.batch = list(paths), size, crop, batch

    def __iter__(self):
        from vizsuite.images import load_batch

        for i in range(0, len(self.paths), self.batch):
            yield load_batch(self.paths[i:i + self.batch], self.size, self.crop)


def run_captum(model, layers, concepts, rsets, photos, classes, method, seed, test_fraction, save_path):
    from captum.attr import LayerGradientXActivation
    from captum.concept import TCAV, Concept
    from captum.concept._utils.classifier import Classifier

    from vizsuite.concepts import run_seeds, train_cav
    from vizsuite.images import load_batch

    size, crop = model.input_size, model.spec.crop_pct
    n = len(rsets)
    seeds = run_seeds(seed, n)
    cons = [Concept(i, name, Batches(c.paths, size, crop)) for i, (name, c) in enumerate(concepts.items())]
    rnd = [Concept(len(cons) + i, r.name, Batches(r.paths, size, crop)) for i, r in enumerate(rsets)]
    sets, plan = [], []
    for c in cons:
        for i, r in enumerate(rnd):
            sets.append([c, r])
            plan.append((c.id, r.id, seeds[i]))
    for i in range(n):
        sets.append([rnd[i], rnd[(i + 1) % n]])
        plan.append((rnd[i].id, rnd[(i + 1) % n].id, seeds[i]))
    queue = [p for p in plan for _ in layers]     # captum trains per set, then per layer

    class SameBackend(Classifier):
        """vizsuite's CAV trainer behind captum's Classifier interface (same split, same seed)."""

        def __init__(self):
            self.w, self.ids = None, None

        def train_and_eval(self, dataloader, **kwargs):
            xs, ys = zip(*dataloader)
            x, y = torch.cat(xs).double().numpy(), torch.cat(ys).numpy()
            pos, neg, s = queue.pop(0)
            cav = train_cav(x[y == pos], x[y == neg], method, seed=s, test_fraction=test_fraction)
            self.w, self.ids = cav.vector, [pos, neg]
            return {"accs": torch.tensor(cav.accuracy)}

        def weights(self):
            w = torch.as_tensor(self.w)
            return torch.stack([w, -w])

        def classes(self):
            return self.ids

    def go():
        inputs = load_batch(photos, size, crop)
        captum = TCAV(model, [f"net.{layer}" for layer in layers], classifier=SameBackend(), save_path=save_path,
                      layer_attr_method=LayerGradientXActivation(model, None, multiply_by_inputs=False))
        return {cls: captum.interpret(inputs, sets, target=cls) for cls in classes}

    scores, wall, cpu = timed(go)
    out = {}
    for cls, sc in scores.items():
        for layer in layers:
            key = f"net.{layer}"
            for c in cons:
                out[(c.name, layer, cls)] = np.array([float(sc[f"{c.id}-{r.id}"][key]["sign_count"][0]) for r in rnd])
            out[("null", layer, cls)] = np.array(
                [float(sc[f"{rnd[i].id}-{rnd[(i + 1) % n].id}"][key]["sign_count"][0]) for i in range(n)])
    return out, wall, cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20, help="images per concept (default 20)")
    ap.add_argument("--pool", type=int, default=60, help="random pool images (default 60)")
    ap.add_argument("--runs", type=int, default=10, help="random runs (default 10)")
    ap.add_argument("--layers", default="blocks.3,blocks.4,blocks.5")
    ap.add_argument("--classes", default="zebra,tabby")
    ap.add_argument("--method", default="mean", help="CAV backend on both sides (default mean: FastCAV)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "concepts.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(THREADS)

    from vizsuite.concepts import concept_from_folder, random_sets, t_test, tcav
    from vizsuite.concepts.make import make_concepts
    from vizsuite.images import find_images
    from vizsuite.zoo import load_model

    layers = args.layers.split(",")
    model = load_model("efficientnet_lite0")
    classes = [model.class_index(c) for c in args.classes.split(",")]
    photos = find_images(ROOT / "galleries" / "photos")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_concepts(tmp / "concepts", ["stripes_90", "dots"], count=args.count, random_count=args.pool, size=128)
        concepts = {"stripes": concept_from_folder("stripes", tmp / "concepts" / "stripes_90"),
                    "dots": concept_from_folder("dots", tmp / "concepts" / "dots")}
        rsets = random_sets([tmp / "concepts" / "random"], args.runs, args.count, seed=0)
        images = {c: photos for c in classes}

        def ours(cache=None, imgs=images):
            return tcav(model, layers, concepts, rsets, imgs, method=args.method, representation="flat", seed=0,
                        cache_dir=cache)

        # one-time costs (lazy imports of scipy.stats and scikit-learn, the first forwards) are
        # paid before either side is timed: a warm-up run on 2 random runs
        tcav(model, layers[:1], concepts, rsets[:3], {classes[0]: photos[:2]}, method=args.method,
             representation="flat")
        res, v_wall, v_cpu = timed(ours)
        ours(tmp / "cache")                                           # fills the cache
        _, warm_wall, warm_cpu = timed(lambda: ours(tmp / "cache"))
        other = model.class_index("tiger")
        _, re_wall, re_cpu = timed(lambda: ours(tmp / "cache", {other: photos}))   # another target: cached acts
        theirs, c_wall, c_cpu = run_captum(model, layers, concepts, rsets, photos, classes, args.method, 0, 0.25,
                                           str(tmp / "captum"))
    load1 = os.getloadavg()
    diff, pdiff, rows = 0.0, 0.0, []
    for s in res.scores:
        t = theirs[(s.concept, s.layer, s.target)]
        null = theirs[("null", s.layer, s.target)]
        diff = max(diff, float(np.abs(s.runs - t).max()), float(np.abs(s.null - null).max()))
        p = min(1.0, t_test(t, null) * res.tested)
        pdiff = max(pdiff, abs(p - s.p_value))
        rows.append(f"| {s.concept} | {s.layer} | {model.label(s.target)} | {s.score:.3f} | {float(t.mean()):.3f} | "
                    f"{s.score_std:.3f} | {s.p_value:.3g} | {p:.3g} | {'yes' if s.significant else 'no'} |")
    torch_v = torch.__version__
    import captum

    cpu_name = platform.machine()
    try:
        cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        cores = "?"
    text = f"""# TCAV benchmark: vizsuite vs captum TCAV

Machine: {cpu_name}, {cores} cores shared with other jobs (load average {load0[0]:.1f} before, {load1[0]:.1f} after),
torch {torch_v}, captum {captum.__version__}, {THREADS} thread. One run of each side in one process (`python
benchmarks/concepts.py`), after a small warm-up run (imports, first forwards). efficientnet_lite0 (pretrained), layers {", ".join(layers)}; concepts stripes_90 and dots
({args.count} generated images each, 128 px, fed at 224 px); {args.runs} random runs: seeded subsets of
{min(args.count, args.pool // 2)} images from a generated noise pool of {args.pool}; null: {args.runs} random-vs-random
CAVs; classes {", ".join(model.label(c) for c in classes)} tested on the {len(photos)} sample photos; flattened
activations (C*H*W, captum's convention); CAV backend on both sides: vizsuite's `train_cav` method
`{args.method}` (captum gets it through its `Classifier` interface, same seeds and splits).

| run | CPU s | wall s | captum / vizsuite CPU | captum / vizsuite wall |
|---|---|---|---|---|
| vizsuite `tcav` (cold) | {v_cpu:.1f} | {v_wall:.1f} | {c_cpu / v_cpu:.1f}x | {c_wall / v_wall:.1f}x |
| vizsuite, rerun (activations and gradients cached: CAVs and scores only) | {warm_cpu:.1f} | {warm_wall:.1f} | {c_cpu / warm_cpu:.1f}x | {c_wall / warm_wall:.1f}x |
| vizsuite, another class (`tiger`: concept and random activations cached) | {re_cpu:.1f} | {re_wall:.1f} | - | - |
| captum `TCAV.interpret`, one call per class | {c_cpu:.1f} | {c_wall:.1f} | - | - |

Largest difference of the TCAV scores over every run (concept and null), layer and class: **{diff:.1e}**; of the
Bonferroni-corrected p-values (captum's scores through the same t-test): {pdiff:.1e}.

| concept | layer | class | vizsuite TCAV | captum TCAV | std | p (vizsuite) | p (captum scores) | significant |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Where the time goes: both sides train the same {(len(concepts) + 1) * args.runs * len(layers)}
CAVs with the same trainer. captum computes activations once per Concept, so every random run's images go through the
network again ({args.runs} x {min(args.count, args.pool // 2)} images, where vizsuite reads each image of the pool once),
writes and reads them from disk, and runs one forward + backward per layer and per class over the class images;
vizsuite streams each image folder once for all layers and one forward with one backward per class,
on its batch-norm-folded frozen copy (`capture.frozen_copy`: built once per run and shared by the concept,
random and gradient passes); captum runs the model as loaded, and the scores above are still identical.
"""
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
