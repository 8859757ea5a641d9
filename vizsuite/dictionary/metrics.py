"""Dictionary metrics: explained variance, sparsity, dead/dense features, one-to-one matching.

Running sums (`Reconstruction`) so held-out metrics cover every position of every held-out
image without keeping them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

#: a feature firing on more than this fraction of held-out vectors counts as dense
DENSE_FRACTION = 0.1


def _matcher():
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:  # scipy is optional: fall back to greedy matching
        return None
    return linear_sum_assignment


def matching_method() -> str:
    return "hungarian (scipy.optimize.linear_sum_assignment)" if _matcher() else "greedy"


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = torch.nn.functional.normalize(torch.as_tensor(a).double(), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(b).double(), dim=1)
    return a @ b.T


def match(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-to-one matching of the rows of `a` (A x C) to rows of `b` (B x C) maximizing the total
    cosine: (rows of a, rows of b, their cosines), min(A, B) pairs. Hungarian when scipy is
    importable, else greedy (largest remaining cosine first)."""
    cos = cosine_matrix(a, b)
    solve = _matcher()
    if solve is not None:
        r, c = solve(-cos.numpy())
        r, c = torch.as_tensor(r), torch.as_tensor(c)
    else:
        order = torch.argsort(cos.flatten(), descending=True)
        used_r, used_c, rs, cs = set(), set(), [], []
        for flat in order.tolist():
            i, j = divmod(flat, cos.shape[1])
            if i in used_r or j in used_c:
                continue
            used_r.add(i)
            used_c.add(j)
            rs.append(i)
            cs.append(j)
            if len(rs) == min(cos.shape):
                break
        r, c = torch.tensor(rs), torch.tensor(cs)
    return r, c, cos[r, c]


def recovered(planted: torch.Tensor, learned: torch.Tensor, threshold: float = 0.9) -> int:
    """How many planted directions have a one-to-one matched learned row at cosine >= threshold."""
    return int((match(planted, learned)[2] >= threshold).sum())


def stability(dec_a: torch.Tensor, dec_b: torch.Tensor) -> dict:
    """Cross-seed stability: mean cosine of one-to-one matched decoder rows (and fractions above
    0.7 / 0.9)."""
    _, _, cos = match(dec_a, dec_b)
    return {"mean_matched_cosine": float(cos.mean()), "fraction_above_0.7": float((cos >= 0.7).double().mean()),
            "fraction_above_0.9": float((cos >= 0.9).double().mean()), "matching": matching_method()}


@dataclass
class Reconstruction:
    """Running reconstruction metrics over vectors N x C (float64 sums)."""

    features: int
    n: int = 0
    sse: float = 0.0
    sum_x: Optional[torch.Tensor] = None
    sum_x2: float = 0.0
    active: float = 0.0
    fires: Optional[torch.Tensor] = None

    #: rows per float64 step: the sums are exact in float64 without a float64 copy of the batch
    ROWS = 4096

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> None:
        if x.shape[0] > self.ROWS:
            for i in range(0, x.shape[0], self.ROWS):
                self.update(x[i:i + self.ROWS], x_hat[i:i + self.ROWS], codes[i:i + self.ROWS])
            return
        x, x_hat = x.double(), x_hat.double()
        if self.sum_x is None:
            self.sum_x = torch.zeros(x.shape[1], dtype=torch.float64)
            self.fires = torch.zeros(self.features, dtype=torch.float64)
        self.n += x.shape[0]
        self.sse += float((x - x_hat).pow(2).sum())
        self.sum_x += x.sum(0).cpu()
        self.sum_x2 += float(x.pow(2).sum())
        on = codes != 0
        self.active += float(on.sum())
        self.fires += on.sum(0).double().cpu()

    def result(self) -> dict:
        n = max(self.n, 1)
        sst = self.sum_x2 - float(self.sum_x.pow(2).sum()) / n if self.sum_x is not None else 0.0
        freq = self.fires / n if self.fires is not None else torch.zeros(self.features)
        return {"vectors": self.n, "r2": 1.0 - self.sse / max(sst, 1e-30), "mse": self.sse / n,
                "mean_l0": self.active / n, "dead_fraction": float((freq == 0).double().mean()),
                "dense_fraction": float((freq > DENSE_FRACTION).double().mean()),
                "dense_threshold": DENSE_FRACTION, "frequency": freq}


def reconstruction(x: torch.Tensor, x_hat: torch.Tensor, codes: torch.Tensor) -> dict:
    r = Reconstruction(codes.shape[1])
    r.update(x, x_hat, codes)
    return r.result()


@dataclass
class OutputEffect:
    """Top-1 agreement and KL(clean || edited) of the model's predictions, per image."""

    n: int = 0
    agree: int = 0
    kl: float = 0.0
    clean_top1: list = field(default_factory=list)

    def update(self, clean: torch.Tensor, edited: torch.Tensor) -> None:
        clean, edited = clean.double(), edited.double()
        self.n += clean.shape[0]
        self.agree += int((clean.argmax(1) == edited.argmax(1)).sum())
        lp, lq = clean.log_softmax(1), edited.log_softmax(1)
        self.kl += float((lp.exp() * (lp - lq)).sum())

    def result(self) -> dict:
        n = max(self.n, 1)
        return {"images": self.n, "top1_agreement": self.agree / n, "kl": self.kl / n}
