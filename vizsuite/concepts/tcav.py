"""TCAV with significance (Kim et al. 2018; docs/concepts.md).

    res = tcav(model, ["blocks.4"], {"stripes": "concepts/stripes_0"}, ["concepts/noise"],
               {281: "photos/"}, runs=10)
    for s in res.scores: s.concept, s.layer, s.target, s.score, s.p_value, s.significant

For every (concept, layer, class): `runs` CAVs, each trained on the concept against another
random counterexample set, give `runs` TCAV scores (the fraction of the class's images whose
logit increases along the CAV: directional derivative > 0). `runs` CAVs trained on random set
i against random set i + 1 (cyclically) give the null scores: pairs of distinct random sets, no
set shared by all of them (a shared reference set would bias every null CAV the same way). A two-sided t-test (scipy.stats.ttest_ind)
compares the two; p-values are Bonferroni-corrected over the tested triples. Relative CAVs
(concept A against concept B) use seeded subsets of the two concepts per run.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from ..errors import UserError
from .cav import CAV, check_method, min_examples, train_cav
from .data import (Concept, ClassGradients, check_representation, class_gradients, concept_from_folder,
                   layer_vectors, random_sets)


@dataclass
class TCAVScore:
    """One (concept, layer, class) triple.

    runs: TCAV score per run (concept CAVs); null: per run of the random-vs-random CAVs;
    score / score_std: mean and std of `runs`; p_value: two-sided t-test of runs against null,
    Bonferroni-corrected over the tested triples (p_raw: uncorrected); accuracy: mean held-out
    accuracy of the concept CAVs; cav: mean of the runs' CAVs, unit norm (D,);
    sensitivity: per image, the directional derivative along each run's CAV (images x runs);
    presence: per image, the projection of its activation on `cav`."""

    concept: str
    layer: str
    target: int
    runs: np.ndarray
    null: np.ndarray
    p_raw: float
    p_value: float
    significant: bool
    accuracy: float
    cav: np.ndarray
    sensitivity: np.ndarray
    presence: np.ndarray
    relative: bool = False
    run_cavs: Optional[np.ndarray] = None     # runs x D: each run's CAV (unit norm)
    null_cavs: Optional[np.ndarray] = None    # runs x D: the random-vs-random CAVs behind `null`

    @property
    def score(self) -> float:
        return float(np.mean(self.runs))

    @property
    def score_std(self) -> float:
        return float(np.std(self.runs))

    @property
    def per_image(self) -> np.ndarray:
        """Per image, the fraction of runs whose CAV increases the class logit."""
        return (self.sensitivity > 0).mean(1)


@dataclass
class TCAVResult:
    """Every tested triple, the images behind them and how the run was set up."""

    scores: list
    layers: list
    targets: list
    images: dict                     # class -> list of target image paths (readable ones)
    concepts: dict                   # name -> Concept
    random: list                     # random counterexample Concepts, one per run
    method: str
    representation: str
    alpha: float
    tested: int
    seed: int
    seconds: float = 0.0
    random_accuracy: dict = field(default_factory=dict)   # layer -> mean accuracy of random-vs-random CAVs
    passes: list = field(default_factory=list)            # stream.PassInfo of every activation pass
    shapes: dict = field(default_factory=dict)            # layer -> activation shape (C[, H, W])

    def get(self, concept: str, layer: str, target: int) -> TCAVScore:
        for s in self.scores:
            if (s.concept, s.layer, s.target) == (concept, layer, int(target)):
                return s
        raise KeyError((concept, layer, target))


def tcav_scores(sensitivity: np.ndarray, cavs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(scores per CAV, directional derivatives images x CAVs): a score is the fraction of rows
    of `sensitivity` (images x D) with a positive dot product with the CAV."""
    m = np.stack([np.asarray(c, dtype=np.float64) for c in cavs], 1)
    dd = np.asarray(sensitivity, dtype=np.float64) @ m
    return (dd > 0).mean(0), dd


def t_test(runs: np.ndarray, null: np.ndarray) -> float:
    """Two-sided Student t-test (scipy.stats.ttest_ind, equal variances) p-value; 1.0 when both
    sides are constant and equal (nothing to tell apart)."""
    from scipy.stats import ttest_ind

    runs, null = np.asarray(runs, np.float64), np.asarray(null, np.float64)
    if np.ptp(runs) == 0 and np.ptp(null) == 0:
        return 1.0 if runs[0] == null[0] else 0.0
    with warnings.catch_warnings():  # one constant side: scipy warns of precision loss, the p-value is right
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(runs, null).pvalue)
    return 1.0 if math.isnan(p) else p


def _concepts(concepts) -> dict:
    out = {}
    for name, c in dict(concepts).items():
        out[name] = c if isinstance(c, Concept) else (
            concept_from_folder(name, c) if isinstance(c, (str, os.PathLike)) else Concept(name, list(c)))
        if not out[name].paths:
            raise UserError(f"concept {name!r} has no images")
    if not out:
        raise UserError("give at least one concept (NAME=DIR)")
    return out


def _target_images(images) -> dict:
    from ..images import find_images

    out = {}
    for cls, imgs in dict(images).items():
        paths = find_images(imgs) if isinstance(imgs, (str, os.PathLike)) else [p for p in imgs]
        if not paths:
            raise UserError(f"no images for target class {cls}")
        out[int(cls)] = paths
    return out


def tcav(model, layers: Sequence[str], concepts: Mapping, random, images: Mapping, *, runs: Optional[int] = 10,
         method: str = "logistic", representation: str = "pooled", relative: bool = False, alpha: float = 0.05,
         seed: int = 0, test_fraction: float = 0.25, cache_dir=None, batch_size: int = 16,
         progress: bool = False, fast: bool = True) -> TCAVResult:
    """TCAV scores with significance for every concept x layer x class (see the module doc).

    concepts: NAME -> folder | paths | Concept. random: folders (several: the sets themselves;
    one: a pool of `runs + 1` seeded subsets) or a list of Concepts. images: class index ->
    folder | paths (the images whose logit is tested). relative: also test every ordered pair of
    concepts (`A-vs-B`). representation: "pooled" | "flat" (captum's convention)."""
    start = time.perf_counter()
    check_method(method)
    check_representation(representation)
    if not 0 < alpha < 1:
        raise UserError(f"alpha must be between 0 and 1, got {alpha}")
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise UserError("give at least one layer")
    concepts = _concepts(concepts)
    need = min_examples(test_fraction)
    for c in concepts.values():
        if len(c) < need:
            raise UserError(f"concept {c.name!r} has {len(c)} image(s); a held-out split of {test_fraction:g} "
                            f"needs at least {need}")
    targets = _target_images(images)
    if random and all(isinstance(r, Concept) for r in random):
        rsets = list(random)
    else:
        rsets = random_sets(list(random or ()), runs, max(len(c) for c in concepts.values()), seed)
    if len(rsets) < 3:
        raise UserError(f"{len(rsets)} random set(s): significance needs at least 3 runs")
    for r in rsets:
        if len(r) < need:
            raise UserError(f"random set {r.name} has {len(r)} image(s); a held-out split of {test_fraction:g} "
                            f"needs at least {need}")
    n_runs = len(rsets)

    # activations: one cached pass per image set (random subsets of a pool read the pool once)
    def acts(paths, desc, masks=None):
        return layer_vectors(model, paths, layers, representation, cache_dir=cache_dir, batch_size=batch_size,
                             progress=progress, desc=desc, fast=fast, masks=masks)

    cvec, passes = {}, []
    for name, c in concepts.items():
        lv = acts(c.paths, f"concept {name}", c.masks)
        cvec[name] = lv.result()
        passes.append(lv.info)
    pool = sorted({str(p) for r in rsets for p in r.paths})
    lv = acts(pool, "random images")
    passes.append(lv.info)
    shapes = dict(lv.shapes)
    where = {p: i for i, p in enumerate(pool[j] for j in lv.index)}
    rvec = []
    for r in rsets:
        rows = [where[str(p)] for p in r.paths if str(p) in where]
        rvec.append({layer: lv.result()[layer][rows] for layer in layers})

    # gradients of every class at every layer: one forward per image folder, one backward per class
    by_paths: dict = {}
    for cls, paths in targets.items():
        by_paths.setdefault(tuple(str(p) for p in paths), []).append(cls)
    grads: dict[int, ClassGradients] = {}
    target_paths: dict = {}
    for paths, classes in by_paths.items():
        red = class_gradients(model, list(paths), layers, classes, representation, cache_dir=cache_dir,
                              batch_size=batch_size, progress=progress, fast=fast)
        passes.append(next(iter(red.values())).info)
        for cls, r in red.items():
            grads[cls] = r
            target_paths[cls] = [paths[i] for i in r.index]

    seeds = run_seeds(seed, n_runs)
    random_accuracy = {}
    pending = []
    for layer in layers:
        null_cavs = [train_cav(rvec[i][layer], rvec[(i + 1) % n_runs][layer], method, seed=seeds[i],
                               test_fraction=test_fraction) for i in range(n_runs)]
        random_accuracy[layer] = float(np.mean([c.accuracy for c in null_cavs]))
        sets = []
        for name in concepts:
            sets.append((name, [train_cav(cvec[name][layer], rvec[i][layer], method, seed=seeds[i],
                                          test_fraction=test_fraction) for i in range(n_runs)], False))
        if relative:
            for a in concepts:
                for b in concepts:
                    if a != b:
                        sets.append((f"{a}-vs-{b}", _relative(cvec[a][layer], cvec[b][layer], n_runs, method,
                                                              seeds, test_fraction), True))
        for cls in targets:
            res = grads[cls].result()
            sens, act = res["grads"][layer], res["acts"][layer]
            null, _ = tcav_scores(sens, [c.vector for c in null_cavs])
            null_stack = np.stack([c.vector for c in null_cavs])
            for name, cavs, rel in sets:
                scores, dd = tcav_scores(sens, [c.vector for c in cavs])
                mean = np.mean([c.vector for c in cavs], 0)
                mean = mean / (np.linalg.norm(mean) or 1.0)
                pending.append(dict(concept=name, layer=layer, target=int(cls), runs=scores, null=null,
                                    p_raw=t_test(scores, null), accuracy=float(np.mean([c.accuracy for c in cavs])),
                                    cav=mean, sensitivity=dd, presence=np.asarray(act, np.float64) @ mean,
                                    relative=rel, run_cavs=np.stack([c.vector for c in cavs]),
                                    null_cavs=null_stack))
    tested = len(pending)
    out = []
    for p in pending:
        corrected = min(1.0, p["p_raw"] * tested)
        out.append(TCAVScore(p_value=corrected, significant=bool(corrected < alpha), **p))
    return TCAVResult(out, layers, list(targets), target_paths, concepts, rsets, method, representation, alpha,
                      tested, int(seed), time.perf_counter() - start, random_accuracy, passes,
                      shapes)


def run_seeds(seed: int, runs: int) -> list[int]:
    """The split seeds of each run: run i's concept CAVs and its null CAV use seeds[i]; relative
    CAVs draw their subsets from seeds[runs + 1 + i]."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 2**31 - 1, (4 * (runs + 1),), generator=g).tolist()


def _relative(a: np.ndarray, b: np.ndarray, runs: int, method: str, seeds, test_fraction: float) -> list[CAV]:
    """Relative CAVs of concept A against concept B: per run, seeded subsets (80%) of both."""
    out = []
    for i in range(runs):
        g = torch.Generator().manual_seed(int(seeds[runs + 1 + i]))
        ka, kb = max(min_examples(test_fraction), int(0.8 * len(a))), max(min_examples(test_fraction), int(0.8 * len(b)))
        ia = torch.randperm(len(a), generator=g)[:ka].sort().values.numpy()
        ib = torch.randperm(len(b), generator=g)[:kb].sort().values.numpy()
        out.append(train_cav(a[ia], b[ib], method, seed=seeds[i], test_fraction=test_fraction))
    return out
