"""Training loops: SAEs (Adam, unit-norm decoder rows, data init, dead-feature resampling,
warm-up + decay) and the NMF baseline (multiplicative updates), on vectors held in memory
(the bounded reservoir of `data.VectorReservoir`).

Every random choice draws from the `torch.Generator` passed in (docs/conventions.md).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from .sae import METHODS, SAE

SAE_METHODS = tuple(METHODS)
ALL_METHODS = SAE_METHODS + ("nmf",)


@dataclass
class TrainConfig:
    method: str = "topk"
    features: int = 256
    k: int = 8                   # topk: per vector; batchtopk: on average
    epochs: int = 10
    batch_size: int = 1024       # vectors per step
    lr: float = 5e-3
    warmup: float = 0.05         # fraction of steps with a linear warm-up
    decay: float = 0.3           # final fraction of steps decayed linearly to 0
    l1: float = 0.1              # relu-l1 only (inputs normalized to mean squared norm 1)
    resample_every: float = 0.1  # fraction of steps between dead-feature checks
    resample_until: float = 0.6  # no resampling after this fraction of steps
    dead_after: int = 0          # vectors without firing = dead (0: one epoch, at most 100k)
    nmf_iters: int = 200
    nmf_max_vectors: int = 20_000  # NMF holds N x F codes: fit on a seeded sample of this many

    def check(self) -> None:
        if self.method not in ALL_METHODS:
            raise UserError(f"unknown method {self.method!r} (expected one of {', '.join(ALL_METHODS)})")
        if self.features < 1:
            raise UserError(f"--features must be at least 1, got {self.features}")
        if self.method in ("topk", "batchtopk") and not 1 <= self.k <= self.features:
            raise UserError(f"--k must be between 1 and --features ({self.features}), got {self.k}")
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1 or self.lr <= 0 or self.l1 < 0:
            raise UserError("batch size and learning rate must be positive, --l1 non-negative")


@dataclass
class Normalization:
    """x_norm = (x - shift) / scale, with scale making the mean squared norm of x_norm 1."""

    shift: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, x: torch.Tensor, center: bool = True) -> "Normalization":
        shift = x.mean(0, dtype=torch.float64) if center else torch.zeros(x.shape[1], dtype=torch.float64)
        ms = sum(float((part - shift.to(x.dtype)).pow(2).sum()) for part in x.split(4096)) / max(len(x), 1)
        return cls(shift, torch.tensor(ms, dtype=torch.float64).clamp_min(1e-24).sqrt())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift.to(x)) / self.scale.to(x)


@dataclass
class TrainLog:
    steps: int = 0
    resampled: list = field(default_factory=list)     # (step, features resampled)
    loss: list = field(default_factory=list)          # per epoch
    l0: list = field(default_factory=list)
    seconds: float = 0.0


def _schedule(total: int, warmup: float, decay: float):
    w, d = max(1, int(total * warmup)), max(1, int(total * decay))

    def factor(step: int) -> float:
        if step < w:
            return (step + 1) / w
        left = total - step
        return min(1.0, max(left, 0) / d)
    return factor


class Adam:
    """Adam (Kingma & Ba 2015), the textbook update, with per-row moment resets for resampling.

    Our own because constructing `torch.optim.Adam` imports torch._dynamo: +150 MB resident and
    ~3 s on first use, measured here, more than the whole training state of a typical
    dictionary (and the memory-budget test would measure the import, not the training)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, factor: float = 1.0) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            p.sub_(self.lr * factor / c1 * m / ((v / c2).sqrt_() + self.eps))

    def reset(self, param, rows) -> None:
        for p, m, v in zip(self.params, self.m, self.v):
            if p is param:
                m[rows] = 0.0
                v[rows] = 0.0


def init_from_data(sae: SAE, x: torch.Tensor, generator: torch.Generator) -> None:
    """b_dec = the data mean; decoder rows = random data vectors (centred, unit-norm, a little
    noise for duplicates); encoder = decoder (tied at init); b_enc = 0."""
    f = sae.features
    with torch.no_grad():
        mean = x.mean(0)
        idx = torch.randint(0, x.shape[0], (f,), generator=generator)
        rows = x[idx] - mean + 1e-3 * torch.randn(f, x.shape[1], generator=generator, dtype=x.dtype)
        rows = torch.nn.functional.normalize(rows, dim=1)
        sae.b_dec.copy_(mean)
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows)
        sae.b_enc.zero_()


def _project_decoder_grad(sae: SAE) -> None:
    """Remove the gradient component along each (unit-norm) decoder row: steps stay on the sphere."""
    g, w = sae.W_dec.grad, sae.W_dec.data
    if g is not None:
        g.sub_((g * w).sum(1, keepdim=True) * w)


def _normalize_decoder(sae: SAE) -> None:
    with torch.no_grad():
        sae.W_dec.data = torch.nn.functional.normalize(sae.W_dec.data, dim=1)


def resample_dead(sae: SAE, optimizer, dead: torch.Tensor, x: torch.Tensor, generator: torch.Generator) -> int:
    """Anthropic's resampling: dead features restart at inputs the dictionary reconstructs worst
    (chosen with probability ~ squared error); their Adam moments are reset."""
    idx = dead.nonzero().flatten()
    if not len(idx):
        return 0
    with torch.no_grad():
        sample = x[torch.randperm(x.shape[0], generator=generator)[:min(x.shape[0], 8192)]]
        sae.eval()
        _, _, x_hat = sae(sample)
        sae.train()
        err = (sample - x_hat).pow(2).sum(1)
        if float(err.sum()) <= 0:
            return 0
        pick = torch.multinomial(err, len(idx), replacement=len(idx) > len(err), generator=generator)
        rows = torch.nn.functional.normalize(sample[pick] - sae.b_dec, dim=1)
        alive = ~dead
        enc_norm = float(sae.W_enc[alive].norm(dim=1).mean()) if alive.any() else 1.0
        # TopK-style SAEs pick features by size: a shrunken encoder row would never be chosen
        gain = 0.2 if sae.method == "relu-l1" else 1.0
        sae.W_dec[idx] = rows
        sae.W_enc[idx] = rows * enc_norm * gain
        sae.b_enc[idx] = 0.0
        for p in (sae.W_enc, sae.W_dec, sae.b_enc):
            optimizer.reset(p, idx)
    return len(idx)


@contextlib.contextmanager
def small_op_threads(work: float):
    """One intra-op thread while the matrices are small (restored on exit). Measured on a shared
    2-core machine: a tiny SAE step (256 x 16 x 64) took 65-135 ms with 2 threads and 1 ms with
    one. The choice depends on the sizes only, never on the machine's load: the thread count
    changes float sums, and a dictionary must not depend on what else was running (a
    1024 x 112 x 896 TopK step at load average 9 is 3x slower on 2 threads; accepted)."""
    before = torch.get_num_threads()
    if work < 5e7:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_sae(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator, progress: bool = True,
            desc: str = "dictionary") -> tuple[SAE, TrainLog]:
    """Train an SAE on normalized vectors x (N x C, float32)."""
    with small_op_threads(float(cfg.batch_size) * x.shape[1] * cfg.features):
        return _fit_sae(x, cfg, generator, progress, desc)


def _fit_sae(x, cfg, generator, progress, desc):
    import time

    from tqdm import tqdm

    cfg.check()
    if cfg.method not in METHODS:
        raise UserError(f"fit_sae trains {', '.join(METHODS)}, not {cfg.method!r}")
    n, c = x.shape
    sae = METHODS[cfg.method](c, cfg.features, k=cfg.k, l1=cfg.l1).to(x.dtype)
    init_from_data(sae, x, generator)
    opt = Adam(sae.parameters(), lr=cfg.lr)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = per_epoch * cfg.epochs
    lr_factor = _schedule(total, cfg.warmup, cfg.decay)
    dead_after = cfg.dead_after or min(n, 100_000)
    every = max(1, int(total * cfg.resample_every))
    since = torch.zeros(cfg.features, dtype=torch.long)   # vectors since each feature last fired
    log = TrainLog()
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False)
    step = 0
    sae.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        tot_loss = tot_l0 = 0.0
        for b in range(per_epoch):
            batch = x[order[b * cfg.batch_size:(b + 1) * cfg.batch_size]]
            _, z, x_hat = sae(batch)
            mse = (batch - x_hat).pow(2).sum(1).mean()
            loss = mse + sae.penalty(z)
            opt.zero_grad()
            loss.backward()
            _project_decoder_grad(sae)
            opt.step(lr_factor(step))
            _normalize_decoder(sae)
            fired = (z != 0).any(0).detach()
            since += len(batch)
            since[fired] = 0
            l0 = float((z != 0).sum(1).double().mean())
            tot_loss += mse.item() * len(batch)
            tot_l0 += l0 * len(batch)
            step += 1
            if step % every == 0 and step < total * cfg.resample_until:
                dead = since >= dead_after
                count = resample_dead(sae, opt, dead, x, generator)
                if count:
                    log.resampled.append((step, count))
                    since[dead] = 0
            if step % 10 == 0 or step == total:
                bar.set_postfix(loss=f"{mse.item():.4f}", L0=f"{l0:.1f}", dead=int((since >= dead_after).sum()))
            bar.update(1)
        log.loss.append(tot_loss / n)
        log.l0.append(tot_l0 / n)
    bar.close()
    sae.eval()
    log.steps = step
    log.seconds = time.perf_counter() - start
    return sae, log


# ---------------------------------------------------------------- NMF baseline

@dataclass
class NMFResult:
    dictionary: torch.Tensor    # F x C (unit-norm rows)
    codes: torch.Tensor         # N x F (non-negative)
    semi: bool                  # the data had negative values: semi-NMF (dictionary of any sign)
    encoder: torch.Tensor       # F x C: the affine encoder fitted to the codes
    b_enc: torch.Tensor         # F
    r2_solved: float


def fit_nmf(x: torch.Tensor, features: int, iters: int, generator: torch.Generator, progress: bool = True,
            desc: str = "nmf") -> NMFResult:
    """X ~ W H with W >= 0 (N x F codes). Non-negative data: H >= 0 too (Lee & Seung's
    multiplicative updates, as Lucid's building blocks use sklearn's NMF); data with negative
    values: semi-NMF (Ding, Li & Jordan 2010), H by least squares. Torch, not sklearn: one
    implementation for both cases, float64, seeded through the generator.

    The unit model reads features through an affine encoder, so one is fitted to the solved codes
    by least squares (codes ~ relu(x @ E.T + b)); its metrics are what the basis file gives."""
    with small_op_threads(float(x.shape[0]) * x.shape[1] * features / 20):
        return _fit_nmf(x, features, iters, generator, progress, desc)


def _fit_nmf(x, features, iters, generator, progress, desc):
    from tqdm import tqdm

    x = x.double()
    n, c = x.shape
    semi = bool((x < 0).any())
    eps = 1e-12
    idx = torch.randint(0, n, (features,), generator=generator)
    h = x[idx].clone()
    if not semi:
        h = h.clamp_min(0) + 1e-3
    h = h / h.norm(dim=1, keepdim=True).clamp_min(eps)
    w = torch.rand(n, features, generator=generator, dtype=torch.float64) * float(x.norm(dim=1).mean()) / features
    bar = tqdm(range(iters), desc=desc, unit="it", disable=not progress, leave=False)
    for it in bar:
        xh = x @ h.T                       # N x F
        hh = h @ h.T                       # F x F
        if semi:
            pos = lambda a: (a.abs() + a) / 2  # noqa: E731
            neg = lambda a: (a.abs() - a) / 2  # noqa: E731
            w = w * ((pos(xh) + w @ neg(hh)) / (neg(xh) + w @ pos(hh) + eps)).sqrt()
            h = torch.linalg.lstsq(w.T @ w + eps * torch.eye(features, dtype=w.dtype), w.T @ x).solution
        else:
            w = w * xh / (w @ hh + eps)
            h = h * (w.T @ x) / ((w.T @ w) @ h + eps)
        # keep H's rows unit-norm (the scale moves into W): comparable to SAE decoders
        norms = h.norm(dim=1, keepdim=True).clamp_min(eps)
        h, w = h / norms, w * norms.T
        if it % 20 == 0 or it == iters - 1:
            err = (x - w @ h).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
            bar.set_postfix(r2=f"{1 - float(err):.3f}", L0=f"{float((w > 1e-6 * w.max()).sum(1).double().mean()):.1f}")
    bar.close()
    r2 = 1 - float((x - w @ h).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    xa = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)
    sol = torch.linalg.lstsq(xa, w).solution           # (C+1) x F
    return NMFResult(h.float(), w.float(), semi, sol[:c].T.contiguous().float(), sol[c].float(), r2)
