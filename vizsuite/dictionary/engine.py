"""Train a sparse dictionary on a layer's activations over a folder of images, evaluate it on
held-out images, and write it as a basis file the unit model reads (docs/dictionary.md,
docs/units.md).

    result = train_dictionary(model, "blocks.4", "photos/", TrainConfig("topk", 896, k=16), seed=0)
    write_dictionary(result, "out/")       # basis.npz, decoder.npy, manifest.json

Two passes of the shared stream (`stream.stream`): the training images fill a bounded reservoir
(`data.VectorReservoir`), the held-out images (a seeded tenth, by image) are evaluated with the
trained basis (`data.HeldOutEval`: every position; the layer replaced by its reconstruction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import UserError
from ..hashing import model_fingerprint
from ..units import Dictionary, save_basis
from .data import HeldOutEval, VectorReservoir
from .metrics import matching_method, stability
from .train import Normalization, TrainConfig, fit_nmf, fit_sae


@dataclass
class DictionaryResult:
    basis: Dictionary
    config: TrainConfig
    seed: int
    metrics: dict                       # held-out metrics (+ train-set r2)
    train: dict                         # what training saw and did
    stability: Optional[dict] = None
    frequency: Optional[np.ndarray] = None   # held-out firing frequency per feature
    seconds: dict = field(default_factory=dict)


def split_images(paths, heldout: float, seed: int):
    """(train, held-out) image lists: a seeded `heldout` fraction (at least one image when there
    are two or more; none for a single image, then metrics are on the training image)."""
    paths = list(paths)
    if not 0 <= heldout < 1:
        raise UserError(f"--heldout must be in [0, 1), got {heldout}")
    n = len(paths)
    count = 0 if n < 2 or heldout == 0 else max(1, int(round(n * heldout)))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    held = set(order[:count])
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


def fit_basis(x: torch.Tensor, cfg: TrainConfig, seed: int, *, layer: Optional[str] = None,
              model: Optional[str] = None, name: Optional[str] = None, progress: bool = True):
    """Fit a dictionary on raw vectors x (N x C) -> (units.Dictionary, training info)."""
    cfg.check()
    gen = torch.Generator().manual_seed(seed)
    x = x.float()
    meta = {"method": cfg.method, "seed": seed, "features": cfg.features}
    if cfg.method == "nmf":
        if len(x) > cfg.nmf_max_vectors:
            x = x[torch.randperm(len(x), generator=gen)[:cfg.nmf_max_vectors]]
        norm = Normalization.fit(x, center=False)   # NMF keeps zero where the data has it
        res = fit_nmf(norm(x), cfg.features, cfg.nmf_iters, gen, progress=progress)
        basis = Dictionary(res.encoder, res.dictionary, res.b_enc, None, activation="relu",
                           shift=norm.shift, scale=norm.scale, layer=layer, model=model, name=name,
                           meta={**meta, "semi_nmf": res.semi})
        info = {"method": "semi-nmf" if res.semi else "nmf", "iterations": cfg.nmf_iters, "vectors_fitted": len(x),
                "r2_solved_codes": res.r2_solved,
                "encoder": "affine encoder fitted by least squares to the NMF codes, then ReLU"}
        return basis, info
    norm = Normalization.fit(x)
    sae, log = fit_sae(norm(x), cfg, gen, progress=progress, desc=f"{cfg.method} seed {seed}")
    exp = sae.export()
    meta.update(k=cfg.k)
    basis = Dictionary(sae.W_enc.detach(), sae.W_dec.detach(), sae.b_enc.detach(), sae.b_dec.detach(),
                       activation=exp["activation"], k=exp.get("k", 0), threshold=exp.get("threshold", 0.0),
                       shift=norm.shift, scale=norm.scale, layer=layer, model=model, name=name, meta=meta)
    info = {"steps": log.steps, "resampled": [list(r) for r in log.resampled], "epoch_loss": log.loss,
            "epoch_l0": log.l0, "seconds": log.seconds, "lr": cfg.lr, "batch_size": cfg.batch_size,
            "warmup": cfg.warmup, "decay": cfg.decay, **({"l1": cfg.l1} if cfg.method == "relu-l1" else {})}
    return basis, info


def _fires(basis: Dictionary, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Which features fire at least once on the training vectors (all of them: a feature that
    fires on one photo's views only lives late in the reservoir's order too)."""
    on = torch.zeros(basis.size(basis.channels), dtype=torch.bool)
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            on |= (basis.encode(x[i:i + chunk]) > 0).any(0)
    return on


def train_r2(basis: Dictionary, x: torch.Tensor, chunk: int = 2048) -> float:
    """R² of the basis on the training vectors, in chunks (no full-size temporaries)."""
    from .metrics import Reconstruction

    rec = Reconstruction(basis.size(basis.channels))
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            part = x[i:i + chunk]
            codes = basis.encode(part)
            rec.update(part, basis.decode(codes), codes)
    return rec.result()["r2"]


def evaluate_basis(model, layer: str, basis: Dictionary, paths, *, batch_size: int = 16, progress: bool = False,
                   desc: str = "held-out"):
    """(`data.HeldOutEval` metrics, the pass's `stream.PassInfo`) of `basis` over `paths`: every
    position, and the model's output with the layer replaced by its reconstruction, on the
    shared frozen copy (the pass itself only reads the images)."""
    from ..capture import frozen_copy
    from ..stream import stream

    net = frozen_copy(model, keep=[layer], output=True)
    ev = HeldOutEval(net, layer, basis, device=model.mean.device)
    info = stream(model, list(paths), [ev], batch_size=batch_size, progress=progress, desc=desc, fast=False)
    return ev.result(), info


def train_dictionary(model, layer: str, images, cfg: TrainConfig, *, seed: int = 0,
                     budget_mb: float = 256.0, positions: Optional[int] = None, heldout: float = 0.1,
                     with_stability: bool = False, batch_size: int = 16, progress: bool = True,
                     name: Optional[str] = None, augment: int = 1) -> DictionaryResult:
    """See module doc. `images`: a folder or a list of paths. augment: views per training image
    (itself, its mirror, seeded crops: `images.augmented_views`); held-out images are read
    as they are, and the split is by image, so no view of a held-out image is trained on."""
    from ..hooks import resolve
    from ..stream import _paths, stream

    cfg.check()
    resolve(model, layer)
    paths = _paths(images)
    if not paths:
        raise UserError("no images to train a dictionary on")
    train_paths, held_paths = split_images(paths, heldout, seed)
    fp = model_fingerprint(model)
    t0 = time.perf_counter()
    res = VectorReservoir(layer, int(budget_mb * 2 ** 20), seed=seed, positions=positions)
    info = stream(model, train_paths, [res], batch_size=batch_size, progress=progress,
                  desc=f"activations {layer}", augment=(int(augment), seed) if augment > 1 else None)
    x = res.data
    t_stream = time.perf_counter() - t0
    basis, tinfo = fit_basis(x, cfg, seed, layer=layer, model=fp, name=name, progress=progress)
    t_train = time.perf_counter() - t0 - t_stream
    stab = None
    if with_stability:
        other, _ = fit_basis(x, cfg, seed + 1, layer=layer, model=fp, name=name, progress=progress)
        stab = {**stability(basis.decoder, other.decoder), "seeds": [seed, seed + 1]}
        alive = [_fires(b, x) for b in (basis, other)]
        if alive[0].any() and alive[1].any():   # dead rows match nothing: the same over live features
            live = stability(basis.decoder[alive[0]], other.decoder[alive[1]])
            stab["alive_mean_matched_cosine"] = live["mean_matched_cosine"]
            stab["alive_features"] = [int(a.sum()) for a in alive]
    t_stab = time.perf_counter() - t0 - t_stream - t_train
    metrics, _ = evaluate_basis(model, layer, basis, held_paths or train_paths, batch_size=batch_size,
                                progress=progress)
    freq = metrics.pop("frequency").numpy()
    metrics["train_r2"] = train_r2(basis, x)
    # held-out "dead" counts features that did not fire on a few held-out images; this one counts
    # features that never fire on (up to 20,000 of) the training vectors: dead in the usual sense
    metrics["train_dead_fraction"] = float(1.0 - _fires(basis, x).double().mean())
    metrics["heldout_images"] = len(held_paths)
    metrics["heldout"] = bool(held_paths)
    train = {"images": len(train_paths), "augment": int(augment), "skipped": info.skipped, "vectors_seen": res.seen,
             "vectors_kept": res.filled, "reservoir_capacity": res.capacity, "budget_mb": budget_mb,
             "sampled": res.seen > res.filled, "positions_per_image": positions, "channels": int(x.shape[1]),
             "normalization": {"shift": "per-channel mean" if cfg.method != "nmf" else "none",
                               "scale": float(basis.scale), "mean_squared_norm_after": 1.0},
             **tinfo}
    seconds = {"stream": t_stream, "train": t_train, "stability": t_stab,
               "evaluate": time.perf_counter() - t0 - t_stream - t_train - t_stab}
    return DictionaryResult(basis, cfg, seed, metrics, train, stab, freq, seconds)


def write_dictionary(result: DictionaryResult, out_dir, command=None, model_name: str = "") -> Path:
    """basis.npz (units.save_basis), decoder.npy (F x C float32, unit-norm rows, in the
    normalized space; a direction in channel space is the same row: the scale is one number),
    features.json (held-out frequency per feature), manifest.json."""
    from ..fileio import atomic_path, write_json, write_manifest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    b = result.basis
    save_basis(b, out / "basis.npz")
    with atomic_path(out / "decoder.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, b.decoder.numpy().astype(np.float32))
    freq = result.frequency if result.frequency is not None else np.zeros(b.size(b.channels))
    order = np.argsort(-freq, kind="stable")
    write_json(out / "features.json", {"layer": b.layer, "features": [
        {"index": int(i), "frequency": float(freq[i])} for i in order]})
    cfg = result.config
    item = {"file": "basis.npz", "model": model_name, "model_fingerprint": b.model, "layer": b.layer,
            "method": cfg.method, "features": cfg.features, "k": cfg.k if cfg.method in ("topk", "batchtopk") else None,
            "epochs": cfg.epochs if cfg.method != "nmf" else None, "seed": result.seed,
            "activation": b.activation, "hash": b.hash, "metrics": result.metrics,
            "stability": result.stability, "train": result.train, "seconds": result.seconds}
    files = [item, {"file": "decoder.npy", "layer": b.layer, "shape": list(b.decoder.shape)},
             {"file": "features.json", "layer": b.layer}]
    write_manifest(out, files, command, matching=matching_method() if result.stability else None)
    return out
