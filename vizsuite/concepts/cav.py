"""Linear probes and concept activation vectors (docs/concepts.md).

    cav = train_cav(concept_vectors, random_vectors, method="logistic", seed=0)
    cav.vector      # (D,) unit norm, pointing towards the concept
    cav.accuracy    # held-out accuracy of the probe

Methods: "logistic" (scikit-learn LogisticRegression), "svm" (LinearSVC) and "mean" (the
mean-difference direction, FastCAV: the concept mean minus the counterexample mean, classified
by the midpoint of the two projected means). The held-out split is stratified and seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np
import torch

from ..errors import UserError

METHODS = ("logistic", "svm", "mean")


@dataclass
class CAV:
    """A concept direction in one layer's representation: unit-norm `vector` (D,) pointing
    towards the positive set, the probe's held-out `accuracy` (balanced: the mean of the
    accuracies on the two held-out sets; chance 0.5), the method and the set sizes."""

    vector: np.ndarray
    accuracy: float
    method: str
    train: int
    test: int


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown CAV method {method!r} (expected one of {', '.join(METHODS)})")
    return method


def split_sizes(n: int, test_fraction: float) -> tuple[int, int]:
    """(train, test) for a set of n examples; UserError when the held-out split cannot be made."""
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"the held-out fraction must be between 0 and 1, got {test_fraction}")
    test = int(math.floor(n * test_fraction))
    if test < 1 or n - test < 2:
        raise UserError(f"{n} image(s): a held-out split of {test_fraction:g} needs at least "
                        f"{min_examples(test_fraction)} per set")
    return n - test, test


def min_examples(test_fraction: float) -> int:
    """The fewest images a set needs for the held-out split (1 held out, 2 to train on)."""
    n = 3
    while math.floor(n * test_fraction) < 1 or n - math.floor(n * test_fraction) < 2:
        n += 1
    return n


def _split(n: int, test_fraction: float, g: torch.Generator):
    train, test = split_sizes(n, test_fraction)
    order = torch.randperm(n, generator=g).numpy()
    return np.sort(order[test:]), np.sort(order[:test])


def fit_direction(x: np.ndarray, y: np.ndarray, method: str, seed: int = 0):
    """(w (D,), b) of a linear classifier of y in {0, 1} on rows of x (w points towards y = 1)."""
    check_method(method)
    x = np.asarray(x, dtype=np.float64)
    if method == "mean":
        mu1, mu0 = x[y == 1].mean(0), x[y == 0].mean(0)
        w = mu1 - mu0
        return w, -0.5 * float(w @ (mu1 + mu0))
    if method == "logistic":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=1.0, max_iter=1000)
    else:
        from sklearn.svm import LinearSVC

        clf = LinearSVC(C=1.0, max_iter=10000, random_state=int(seed) % (2**32))
    clf.fit(x, y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


def train_cav(positive: np.ndarray, negative: np.ndarray, method: str = "logistic", *, seed: int = 0,
              test_fraction: float = 0.25) -> CAV:
    """Train a probe separating `positive` rows (the concept) from `negative` rows (random
    counterexamples, or another concept for a relative CAV); held-out accuracy on a stratified,
    seeded split. The CAV is the probe's weight vector, normalized."""
    check_method(method)
    positive, negative = np.asarray(positive), np.asarray(negative)
    g = torch.Generator().manual_seed(int(seed))
    ptr, pte = _split(len(positive), test_fraction, g)
    ntr, nte = _split(len(negative), test_fraction, g)
    if method == "mean":   # no stacked float64 copy of the training rows: the two means suffice
        mu1, mu0 = positive[ptr].mean(0, dtype=np.float64), negative[ntr].mean(0, dtype=np.float64)
        w = mu1 - mu0
        b = -0.5 * float(w @ (mu1 + mu0))
    else:
        x = np.concatenate([positive[ptr], negative[ntr]])
        y = np.concatenate([np.ones(len(ptr), np.int64), np.zeros(len(ntr), np.int64)])
        w, b = fit_direction(x, y, method, seed)
    # balanced: the mean of the two sets' accuracies, so chance is 0.5 however unequal the sets
    accuracy = 0.5 * (float((positive[pte] @ w + b > 0).mean()) + float((negative[nte] @ w + b <= 0).mean()))
    norm = float(np.linalg.norm(w))
    vector = w / norm if norm > 0 else w
    return CAV(vector, accuracy, method, len(ptr) + len(ntr), len(pte) + len(nte))


@dataclass
class ProbeResult:
    """A probe of one concept at one layer: held-out accuracy per method, and the CAVs."""

    concept: str
    layer: str
    cavs: dict          # method -> CAV

    def accuracy(self, method: str) -> float:
        return self.cavs[method].accuracy


def probe(positive: np.ndarray, negative: np.ndarray, concept: str, layer: str,
          methods=METHODS, *, seed: int = 0, test_fraction: float = 0.25) -> ProbeResult:
    """Every probe method on the same split (same seed): where is the concept decodable?"""
    return ProbeResult(concept, layer, {m: train_cav(positive, negative, check_method(m), seed=seed,
                                                     test_fraction=test_fraction) for m in methods})


def channel_direction(vector: np.ndarray, channels: int, representation: str) -> np.ndarray:
    """The channel-space direction of a CAV (C,): the CAV itself when pooled; for a flat CAV
    (C*H*W) its mean over positions (what moving every position along one direction sees)."""
    v = np.asarray(vector, dtype=np.float64)
    if representation == "pooled" or v.size == channels:
        return v
    if v.size % channels:
        raise UserError(f"a CAV of {v.size} values does not fit a layer of {channels} channels")
    return v.reshape(channels, -1).mean(1)


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den > 0 else 0.0
