"""Small sparse autoencoders over a layer's channel vectors (TopK, BatchTopK, ReLU + L1).

Written here rather than taken from `overcomplete` (evaluated, v0.3.0): importing it pulls in
matplotlib, opencv and its ViT wrappers; its default encoder is Linear + BatchNorm, which the
unit model's basis file (an affine encoder + activation, `units.Dictionary`) cannot express;
and its training loop wants a DataLoader over stored data, not our bounded reservoir. We keep
its style: modules that only encode/decode (`pre`, `codes`, `decode`), a separate training loop
(`train.fit_sae`) and separate metrics (`metrics.py`).

All modules share one affine form, exactly what `units.Dictionary` computes:
    pre   = (x - b_dec) @ W_enc.T + b_enc
    codes = activation(pre)
    x_hat = codes @ W_dec + b_dec          (W_dec rows kept unit-norm by the trainer)
"""

from __future__ import annotations

import torch
from torch import nn


class SAE(nn.Module):
    """ReLU SAE (the base): F features over C channels."""

    method = "relu-l1"

    def __init__(self, channels: int, features: int, k: int = 0, l1: float = 0.0):
        super().__init__()
        self.channels, self.features, self.k, self.l1 = int(channels), int(features), int(k), float(l1)
        self.W_enc = nn.Parameter(torch.zeros(features, channels))
        self.b_enc = nn.Parameter(torch.zeros(features))
        self.W_dec = nn.Parameter(torch.zeros(features, channels))
        self.b_dec = nn.Parameter(torch.zeros(channels))

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_dec) @ self.W_enc.T + self.b_enc

    def codes(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor):
        pre = self.pre(x)
        z = self.codes(pre)
        return pre, z, self.decode(z)

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        """Sparsity penalty added to the reconstruction loss (L1 of the codes; decoder rows are
        unit-norm, so this is the norm-weighted L1 of Anthropic's recipe)."""
        return self.l1 * z.abs().sum(1).mean()

    def export(self) -> dict:
        """How `units.Dictionary` reproduces `codes` at inference."""
        return {"activation": "relu"}


class TopKSAE(SAE):
    """Keep the k largest (ReLU'd) pre-activations per vector (Gao et al. 2024); no penalty."""

    method = "topk"

    def codes(self, pre):
        z = torch.relu(pre)
        if 0 < self.k < z.shape[1]:
            top = z.topk(self.k, dim=1)
            z = torch.zeros_like(z).scatter_(1, top.indices, top.values)
        return z

    def penalty(self, z):
        return z.new_zeros(())

    def export(self):
        return {"activation": "topk", "k": self.k}


class BatchTopKSAE(SAE):
    """Keep the k x B largest pre-activations over a batch of B vectors (Bussmann et al. 2024):
    features per vector vary, k on average. At inference a threshold replaces the batch
    (a running mean of the smallest kept value), exported as a JumpReLU."""

    method = "batchtopk"

    def __init__(self, channels, features, k=0, l1=0.0):
        super().__init__(channels, features, k, l1)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def codes(self, pre):
        z = torch.relu(pre)
        if not self.training:
            return z * (pre > self.threshold)
        n = z.shape[0] * self.k
        if not 0 < n < z.numel():
            return z
        flat = z.flatten()
        top = flat.topk(n)
        out = torch.zeros_like(flat).scatter_(0, top.indices, top.values).view_as(z)
        with torch.no_grad():
            kept = top.values[top.values > 0]
            if kept.numel():
                smallest = kept.min()
                # running mean over the first batches, then an exponential average
                self.seen += 1
                rate = max(1.0 / float(self.seen), 0.01)
                self.threshold.mul_(1 - rate).add_(rate * smallest)
        return out

    def penalty(self, z):
        return z.new_zeros(())

    def export(self):
        return {"activation": "jumprelu", "threshold": float(self.threshold)}


METHODS = {"topk": TopKSAE, "batchtopk": BatchTopKSAE, "relu-l1": SAE}
