"""Units: the one type for "a reading of a layer" (docs/units.md).

A unit is a layer + a basis + an index (+ an optional spatial position, + how it is reduced over
positions). The basis says what the index counts:

- `CHANNELS`: the layer's own channels (`blocks.4:12`);
- `Directions`: a matrix of directions in the layer's channel space (a probe's concept vectors,
  atlas cell directions): feature k is the dot product with row k (`blocks.4/stripes:0`);
- `Dictionary`: a sparse dictionary (encoder/decoder): feature k is the encoder's output k.

Text grammar (what users type): `LAYER:K`, `LAYER:K@Y,X`, `LAYER/BASIS:K`, `LAYER/BASIS:K@Y,X`,
with bases given by file (`--basis NAME=PATH`). Units round-trip through JSON (task params,
manifests): `Unit.from_json(unit.to_json())`. A basis file records its layer, the model
fingerprint and a content hash; anything keyed by a unit includes that hash.

This module knows no model: validation takes a layer listing (`LayerInfo`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
import torch

from .errors import UserError, close_matches

#: how a unit without a position is read over the layer's positions
REDUCTIONS = ("mean", "max", "min", "center")


# ---------------------------------------------------------------- layer listing

@dataclass(frozen=True)
class LayerInfo:
    """One addressable layer: its dotted name, module type, output shape (no batch) and channels."""

    name: str
    type: str
    shape: tuple[int, ...]
    channels: int
    default: bool = False

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "shape": list(self.shape),
                "channels": self.channels, "default": self.default}


def spatial(a: torch.Tensor, layer: str = "") -> torch.Tensor:
    """N x C x H x W view of an activation (N x C becomes N x C x 1 x 1)."""
    if a.dim() == 2:
        return a[:, :, None, None]
    if a.dim() == 4:
        return a
    raise UserError(f"cannot read channels from {'layer ' + layer + ' with ' if layer else ''}"
                    f"an activation of shape {tuple(a.shape)}")


# ---------------------------------------------------------------- bases

class Basis:
    """What a unit's index counts over a layer's channels. Subclasses: channels, directions,
    dictionary. `encode` maps an activation N x C [x H x W] to features N x K [x H x W]."""

    kind = "basis"
    name: Optional[str] = None
    layer: Optional[str] = None
    model: Optional[str] = None   # model fingerprint the basis was made for (None: any)
    path: Optional[str] = None    # the file it was loaded from, if any

    def size(self, channels: int) -> int:
        """Number of features over a layer of `channels` channels."""
        raise NotImplementedError

    @property
    def hash(self) -> str:
        raise NotImplementedError

    def encode(self, act: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_one(self, act: torch.Tensor, index: int) -> torch.Tensor:
        """Feature `index` only: N x C [x H x W] -> N [x H x W]."""
        return self.encode(act)[:, index]

    def direction(self, index: int, channels: int) -> torch.Tensor:
        """The feature's direction in channel space (C,): what writing along it changes."""
        raise NotImplementedError

    def set_feature(self, act: torch.Tensor, index: int, value: torch.Tensor) -> torch.Tensor:
        """`act` changed along the feature's direction so that its feature `index` reads `value`
        (N [x H x W], broadcastable). Exact for channels and directions; for a dictionary it moves
        the reconstruction by (value - feature) x decoder row, the usual SAE feature edit."""
        now = self.encode_one(act, index)
        d = self.direction(index, act.shape[1]).to(act.device, act.dtype)
        scale = self._write_scale(index, d)
        delta = (value - now) * scale
        shape = (1, -1) + (1,) * (act.dim() - 2)
        return act + delta.unsqueeze(1) * d.view(shape)

    def _write_scale(self, index: int, d: torch.Tensor) -> float:
        return 1.0

    def __eq__(self, other) -> bool:
        return isinstance(other, Basis) and other.kind == self.kind and other.hash == self.hash

    def __hash__(self) -> int:
        return hash((self.kind, self.hash))

    def ref(self) -> dict:
        """What a unit's JSON records of its basis."""
        return {"name": self.name, "kind": self.kind, "hash": self.hash, "layer": self.layer,
                "path": self.path}


class _Channels(Basis):
    """The layer's own channels (the identity basis)."""

    kind = "channels"

    def size(self, channels: int) -> int:
        return channels

    @property
    def hash(self) -> str:
        return "channels"

    def encode(self, act):
        return act

    def encode_one(self, act, index):
        return act[:, index]

    def direction(self, index, channels):
        d = torch.zeros(channels)
        d[index] = 1.0
        return d

    def set_feature(self, act, index, value):
        out = act.clone()
        out[:, index] = value
        return out

    def __repr__(self) -> str:
        return "CHANNELS"


CHANNELS = _Channels()


def _array_hash(*arrays, meta: Mapping) -> str:
    h = hashlib.sha256(json.dumps(dict(meta), sort_keys=True).encode())
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a, dtype=np.float64))
        h.update(f"{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class _Matrix(Basis):
    """A basis given by K x C arrays (`_rows`): K features over C channels."""

    _rows: torch.Tensor
    _hash: str

    def size(self, channels: int) -> int:
        return self._rows.shape[0]

    @property
    def channels(self) -> int:
        return self._rows.shape[1]

    @property
    def hash(self) -> str:
        return self._hash

    def _check(self, act):
        if act.shape[1] != self.channels:
            label = f"{self.kind} basis" + (f" {self.name!r}" if self.name else "")
            raise UserError(f"{label} has {self.channels} channels, the activation has {act.shape[1]}")


class Directions(_Matrix):
    """K directions (K x C): feature k = <activation, row k> at each position (not normalized,
    as Lucid's `direction` objective)."""

    kind = "directions"

    def __init__(self, vectors, name: Optional[str] = None, layer: Optional[str] = None,
                 model: Optional[str] = None, labels: Sequence[str] = (), path: Optional[str] = None):
        v = torch.as_tensor(np.asarray(vectors, dtype=np.float64) if not isinstance(vectors, torch.Tensor)
                            else vectors.detach().double())
        if v.dim() == 1:
            v = v[None]
        if v.dim() != 2 or v.shape[0] < 1 or v.shape[1] < 1:
            raise UserError(f"a direction basis needs a K x C matrix, got shape {tuple(v.shape)}")
        if not torch.isfinite(v).all():
            raise UserError("a direction basis contains NaN or infinite values")
        self.vectors = self._rows = v
        self.name, self.layer, self.model, self.path = name, layer, model, path
        self.labels = tuple(labels)
        self._hash = _array_hash(v.numpy(), meta={"kind": self.kind, "layer": layer, "model": model})

    def encode(self, act):
        self._check(act)
        v = self.vectors.to(act.device, act.dtype)
        return torch.einsum("nc...,kc->nk...", act, v)

    def encode_one(self, act, index):
        self._check(act)
        v = self.vectors[index].to(act.device, act.dtype)
        return torch.einsum("nc...,c->n...", act, v)

    def direction(self, index, channels):
        return self.vectors[index].float()

    def _write_scale(self, index, d):
        return 1.0 / float(d.double().pow(2).sum().clamp_min(1e-24))


class Dictionary(_Matrix):
    """A sparse dictionary over a layer's channels (an SAE or NMF): features K.

    codes = act(((x - shift) / scale - b_dec) @ encoder.T + b_enc), with act one of "relu",
    "topk" (keep the k largest per position, ReLU'd), "jumprelu" (threshold), "none";
    decode(codes) = (codes @ decoder + b_dec) * scale + shift. Arrays: encoder K x C, decoder K x C.
    """

    kind = "dictionary"
    ACTIVATIONS = ("relu", "topk", "jumprelu", "none")

    def __init__(self, encoder, decoder, b_enc=None, b_dec=None, *, activation: str = "relu", k: int = 0,
                 threshold: float = 0.0, shift=None, scale=None, name: Optional[str] = None,
                 layer: Optional[str] = None, model: Optional[str] = None, path: Optional[str] = None,
                 meta: Optional[dict] = None):
        def t(a, shape=None):
            if a is None:
                return torch.zeros(shape, dtype=torch.float64)
            return torch.as_tensor(np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a,
                                              dtype=np.float64))
        self.encoder, self.decoder = t(encoder), t(decoder)
        self._rows = self.encoder
        if self.encoder.dim() != 2 or self.encoder.shape != self.decoder.shape:
            raise UserError(f"dictionary encoder {tuple(self.encoder.shape)} and decoder "
                            f"{tuple(self.decoder.shape)} must both be K x C")
        kk, c = self.encoder.shape
        self.b_enc, self.b_dec = t(b_enc, (kk,)), t(b_dec, (c,))
        self.shift = t(shift, (c,)) if shift is not None else torch.zeros(c, dtype=torch.float64)
        self.scale = t(scale) if scale is not None else torch.ones((), dtype=torch.float64)
        if activation not in self.ACTIVATIONS:
            raise UserError(f"dictionary activation must be one of {', '.join(self.ACTIVATIONS)}, "
                            f"not {activation!r}")
        self.activation, self.k, self.threshold = activation, int(k), float(threshold)
        self.name, self.layer, self.model, self.path = name, layer, model, path
        self.meta = dict(meta or {})
        arrays = (self.encoder, self.decoder, self.b_enc, self.b_dec, self.shift, self.scale)
        if not all(bool(torch.isfinite(a).all()) for a in arrays):
            raise UserError("a dictionary contains NaN or infinite values")
        self._hash = _array_hash(*[a.numpy() for a in arrays],
                                 meta={"kind": self.kind, "activation": activation, "k": self.k,
                                       "threshold": self.threshold, "layer": layer, "model": model})

    def _pre(self, act):
        self._check(act)
        shape = (1, -1) + (1,) * (act.dim() - 2)
        dev, dt = act.device, act.dtype
        x = (act - self.shift.to(dev, dt).view(shape)) / self.scale.to(dev, dt)
        x = x - self.b_dec.to(dev, dt).view(shape)
        pre = torch.einsum("nc...,kc->nk...", x, self.encoder.to(dev, dt))
        return pre + self.b_enc.to(dev, dt).view(shape)

    def encode(self, act):
        pre = self._pre(act)
        if self.activation == "none":
            return pre
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold)
        codes = torch.relu(pre)
        if self.activation == "topk" and 0 < self.k < codes.shape[1]:
            kth = codes.topk(self.k, dim=1).values[:, -1:]
            codes = codes * (codes >= kth)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        dev, dt = codes.device, codes.dtype
        shape = (1, -1) + (1,) * (codes.dim() - 2)
        x = torch.einsum("nk...,kc->nc...", codes, self.decoder.to(dev, dt)) + self.b_dec.to(dev, dt).view(shape)
        return x * self.scale.to(dev, dt) + self.shift.to(dev, dt).view(shape)

    def direction(self, index, channels):
        return (self.decoder[index] * self.scale).float()


# ---------------------------------------------------------------- basis files

def save_basis(basis: Basis, path: str | os.PathLike) -> Path:
    """Write a directions or dictionary basis to an .npz file (atomically); the file records the
    layer, the model fingerprint and the content hash."""
    from .fileio import atomic_path

    if isinstance(basis, Directions):
        arrays = {"vectors": basis.vectors.numpy()}
        meta = {"labels": list(basis.labels)}
    elif isinstance(basis, Dictionary):
        arrays = {n: getattr(basis, n).numpy() for n in ("encoder", "decoder", "b_enc", "b_dec", "shift", "scale")}
        meta = {"activation": basis.activation, "k": basis.k, "threshold": basis.threshold, "meta": basis.meta}
    else:
        raise UserError(f"cannot save a {basis.kind} basis")
    meta.update(vizsuite_basis=1, kind=basis.kind, name=basis.name, layer=basis.layer, model=basis.model,
                hash=basis.hash)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_basis(path: str | os.PathLike, name: Optional[str] = None) -> Basis:
    """Read a basis file written by `save_basis`; UserError for anything else (no pickles).
    `path` may be a folder holding the basis as `basis.npz` (what `vizsuite dictionary -o DIR`
    writes) or as its only .npz file."""
    path = Path(path)
    if path.is_dir():
        path = _basis_in_folder(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except FileNotFoundError:
        raise UserError(f"basis file {path} not found") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: one line
        raise UserError(f"cannot read basis file {path}: not a vizsuite basis ({str(exc).splitlines()[0][:80]})") \
            from None
    if not isinstance(meta, dict) or meta.get("vizsuite_basis") != 1:
        raise UserError(f"cannot read basis file {path}: not a vizsuite basis")
    common = dict(name=name or meta.get("name"), layer=meta.get("layer"), model=meta.get("model"),
                  path=str(path.resolve()))
    try:
        if meta["kind"] == "directions":
            basis: Basis = Directions(arrays["vectors"], labels=meta.get("labels", ()), **common)
        elif meta["kind"] == "dictionary":
            basis = Dictionary(arrays["encoder"], arrays["decoder"], arrays["b_enc"], arrays["b_dec"],
                               activation=meta["activation"], k=meta.get("k", 0),
                               threshold=meta.get("threshold", 0.0), shift=arrays["shift"], scale=arrays["scale"],
                               meta=meta.get("meta"), **common)
        else:
            raise UserError(f"basis file {path}: unknown kind {meta['kind']!r}")
    except KeyError as exc:
        raise UserError(f"basis file {path} lacks {exc}") from None
    if meta.get("hash") and meta["hash"] != basis.hash:
        raise UserError(f"basis file {path} is corrupt: its content does not match its recorded hash")
    return basis


def _basis_in_folder(folder: Path) -> Path:
    if (folder / "basis.npz").is_file():
        return folder / "basis.npz"
    found = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))
    if len(found) == 1:
        return found[0]
    what = "no .npz file" if not found else f"{len(found)} .npz files and no basis.npz"
    raise UserError(f"basis folder {folder} has {what}")


def named_paths(specs: Iterable[str] | None, what: str, placeholder: str = "PATH") -> list[tuple[str, str]]:
    """`NAME=PATH` options (`--basis`, `--concept`, repeatable) -> [(name, path)]; UserError for
    a malformed one, a bad name or a name given twice."""
    out: dict[str, str] = {}
    for spec in specs or ():
        name, sep, path = str(spec).partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise UserError(f"bad --{what} {spec!r}: expected NAME={placeholder}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise UserError(f"bad {what} name {name!r}: use letters, digits, _ . -")
        if name in out:
            raise UserError(f"{what} {name!r} given twice")
        out[name] = path
    return list(out.items())


class BasisSet(dict):
    """NAME -> Basis, as given by `--basis NAME=PATH` (repeatable; PATH a basis file or a folder
    holding basis.npz)."""

    @classmethod
    def from_args(cls, specs: Iterable[str] | None) -> "BasisSet":
        out = cls()
        for name, path in named_paths(specs, "basis"):
            out[name] = load_basis(path, name)
        return out

    def get_basis(self, name: str) -> Basis:
        if name not in self:
            known = f" (given: {', '.join(sorted(self))})" if self else " (none given; pass --basis NAME=PATH)"
            raise UserError(f"unknown basis {name!r}{known}{close_matches(name, self) if self else ''}")
        return self[name]


# ---------------------------------------------------------------- units

_UNIT = re.compile(r"^(?P<layer>[^:@/]+)(?:/(?P<basis>[^:@/]+))?:(?P<index>-?\d+)(?:@(?P<y>-?\d+),(?P<x>-?\d+))?$")


@dataclass(frozen=True)
class Unit:
    """`LAYER:K` (channel K), `LAYER:K@Y,X` (one spatial neuron), `LAYER/BASIS:K[@Y,X]` (feature K
    of a basis). `reduce` says how a unit without a position is read over positions: "mean"
    (default), "max", "min" or "center"."""

    layer: str
    index: int
    y: Optional[int] = None
    x: Optional[int] = None
    basis: Basis = field(default=CHANNELS, compare=True)
    reduce: str = "mean"

    def __post_init__(self):
        if (self.y is None) != (self.x is None):
            raise UserError(f"unit {self.layer}:{self.index}: give both Y and X or neither")
        if self.reduce not in REDUCTIONS:
            raise UserError(f"unknown unit reduction {self.reduce!r} (expected one of {', '.join(REDUCTIONS)})")

    # -- what it is -------------------------------------------------------------------------

    @property
    def channel(self) -> int:
        """The channel index (for units of the channel basis; the feature index otherwise)."""
        return self.index

    @property
    def is_channel(self) -> bool:
        return self.basis is CHANNELS or self.basis.kind == "channels"

    @property
    def basis_name(self) -> Optional[str]:
        return None if self.is_channel else self.basis.name

    def __str__(self) -> str:
        pos = f"@{self.y},{self.x}" if self.y is not None else ""
        b = "" if self.is_channel else f"/{self.basis.name or self.basis.hash}"
        return f"{self.layer}{b}:{self.index}{pos}"

    def at(self, y: Optional[int], x: Optional[int]) -> "Unit":
        return Unit(self.layer, self.index, y, x, self.basis, self.reduce)

    def reduced(self, how: str) -> "Unit":
        return Unit(self.layer, self.index, self.y, self.x, self.basis, how)

    # -- reading ----------------------------------------------------------------------------

    def map(self, act: torch.Tensor) -> torch.Tensor:
        """The unit's feature at every position: N x C [x H x W] -> N [x H x W]."""
        check_shape(self, act)
        return self.basis.encode_one(act, self.index)

    def value(self, act: torch.Tensor) -> torch.Tensor:
        """The unit's value per row (N,): at its position, else reduced over positions."""
        m = self.map(act)
        if m.dim() == 1:
            return m
        if self.y is not None:
            return m[:, self.y, self.x]
        return reduce_map(m, self.reduce)

    def gradient(self, act: torch.Tensor) -> torch.Tensor:
        """d(sum of value)/d(activation): the weights that read the unit (shape of `act`)."""
        if self.is_channel:
            check_shape(self, act)
            mask = torch.zeros_like(act)
            if self.y is not None:
                mask[:, self.index, self.y, self.x] = 1.0
            elif self.reduce == "mean" or act.dim() == 2:
                sub = mask[:, self.index]
                sub += 1.0 / max(1, sub[0].numel())
            else:
                return self._autograd(act)
            return mask
        return self._autograd(act)

    def _autograd(self, act):
        a = act.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.value(a).sum(), a)
        return g

    # -- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict:
        d = {"layer": self.layer, "index": int(self.index)}
        if self.y is not None:
            d.update(y=int(self.y), x=int(self.x))
        if self.reduce != "mean":
            d["reduce"] = self.reduce
        if not self.is_channel:
            d["basis"] = self.basis.ref()
        return d

    @classmethod
    def from_json(cls, data: Mapping, bases: Optional[Mapping[str, Basis]] = None) -> "Unit":
        """Inverse of to_json; a basis is found by name in `bases`, else loaded from its recorded
        path; its content hash must match what the JSON recorded."""
        try:
            layer, index = str(data["layer"]), int(data["index"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"bad unit record {data!r}") from None
        basis: Basis = CHANNELS
        ref = data.get("basis")
        if ref:
            label = f"unit {layer}/{ref.get('name')}:{index}"
            basis = basis_from_ref(ref, bases, since=f"{label} was recorded", needed_by=label)
        return cls(layer, index, data.get("y"), data.get("x"), basis, data.get("reduce", "mean"))


def basis_from_ref(ref: Mapping, bases: Optional[Mapping[str, Basis]] = None, *, since: str = "it was recorded",
                   needed_by: str = "a record") -> Basis:
    """The basis a `Basis.ref()` names: found by name in `bases`, else loaded from its recorded
    path; UserError when neither is possible or its content hash differs from the recorded one."""
    name = ref.get("name")
    if bases and name in bases:
        basis = bases[name]
    elif ref.get("path"):
        basis = load_basis(ref["path"], name)
    else:
        raise UserError(f"{needed_by} needs basis {name!r}; pass --basis {name}=PATH")
    if ref.get("hash") and basis.hash != ref["hash"]:
        raise UserError(f"basis {name!r} has changed since {since} (hash {basis.hash} != {ref['hash']})")
    return basis


def reduce_map(m: torch.Tensor, how: str) -> torch.Tensor:
    """N x H x W -> N by `how`: mean, max, min over positions, or the centre position."""
    if how == "mean":
        return m.mean((-2, -1))
    if how == "max":
        return m.flatten(1).max(1).values
    if how == "min":
        return m.flatten(1).min(1).values
    if how == "center":
        return m[:, m.shape[-2] // 2, m.shape[-1] // 2]
    raise UserError(f"unknown unit reduction {how!r} (expected one of {', '.join(REDUCTIONS)})")


def parse_unit(text, bases: Optional[Mapping[str, Basis]] = None) -> Unit:
    """Parse `LAYER:K`, `LAYER:K@Y,X` or `LAYER/BASIS:K[@Y,X]`; UserError on malformed text or an
    unknown basis. A Unit passes through."""
    if isinstance(text, Unit):
        return text
    m = _UNIT.match(str(text).strip())
    if not m:
        raise UserError(f"bad unit {text!r}: expected LAYER:INDEX, LAYER:INDEX@Y,X or LAYER/BASIS:INDEX")
    basis: Basis = CHANNELS
    if m.group("basis"):
        basis = (bases if isinstance(bases, BasisSet) else BasisSet(bases or {})).get_basis(m.group("basis"))
    y, x = m.group("y"), m.group("x")
    return Unit(m.group("layer"), int(m.group("index")), None if y is None else int(y),
                None if x is None else int(x), basis)


def layer_units(layer: str, count: int, basis: Basis = CHANNELS, reduce: str = "mean") -> list[Unit]:
    """Units 0..count-1 of a layer (in a basis)."""
    return [Unit(layer, i, basis=basis, reduce=reduce) for i in range(count)]


def check_unit(unit: Unit, layers: Sequence[LayerInfo], model: Optional[str] = None) -> LayerInfo:
    """Validate a unit against a layer listing (and the model fingerprint, for a basis that
    records one): unknown layer, out-of-range index or position, a basis made for another layer
    or model -> UserError. Returns the layer's info."""
    by_name = {info.name: info for info in layers}
    if unit.layer not in by_name:
        raise UserError(f"unknown layer {unit.layer!r}{close_matches(unit.layer, by_name)}")
    info = by_name[unit.layer]
    _check_basis(unit, info.channels, model)
    n = unit.basis.size(info.channels)
    if not 0 <= unit.index < n:
        what = "unit" if unit.is_channel else f"feature of basis {unit.basis.name!r}"
        noun = "channels" if unit.is_channel else "features"
        raise UserError(f"{what} {unit.index} out of range for layer {unit.layer} ({n} {noun}: 0..{n - 1})")
    if unit.y is not None:
        if len(info.shape) != 3:
            raise UserError(f"layer {unit.layer} has no spatial positions (shape {info.shape})")
        h, w = info.shape[1:]
        if not (0 <= unit.y < h and 0 <= unit.x < w):
            raise UserError(f"position @{unit.y},{unit.x} out of range for layer {unit.layer} ({h}x{w})")
    return info


def _check_basis(unit: Unit, channels: int, model: Optional[str]) -> None:
    if unit.is_channel:
        return
    b = unit.basis
    if b.layer and b.layer != unit.layer:
        raise UserError(f"basis {b.name!r} was made for layer {b.layer}, not {unit.layer}")
    if model and b.model and b.model != model:
        raise UserError(f"basis {b.name!r} was made for another model (fingerprint {b.model[:12]}..., "
                        f"this model {model[:12]}...)")
    if getattr(b, "channels", channels) != channels:
        raise UserError(f"basis {b.name!r} has {b.channels} channels, layer {unit.layer} has {channels}")


def check_shape(unit: Unit, activation: torch.Tensor) -> None:
    """UserError when the unit does not exist in this activation (N x C [x H x W])."""
    if not isinstance(activation, torch.Tensor) or activation.dim() < 2:
        raise UserError(f"layer {unit.layer} does not output a tensor with channels")
    channels = activation.shape[1]
    _check_basis(unit, channels, None)
    n = unit.basis.size(channels)
    if not 0 <= unit.index < n:
        noun = "channels" if unit.is_channel else "features"
        raise UserError(f"unit {unit.index} out of range for layer {unit.layer} ({n} {noun}: 0..{n - 1})")
    if unit.y is not None:
        if activation.dim() != 4:
            raise UserError(f"layer {unit.layer} has no spatial positions (shape {tuple(activation.shape[1:])})")
        h, w = activation.shape[2:]
        if not (0 <= unit.y < h and 0 <= unit.x < w):
            raise UserError(f"position @{unit.y},{unit.x} out of range for layer {unit.layer} ({h}x{w})")
