"""Content hashes: canonical JSON, model fingerprints (architecture + weights), image lists.

Everything keyed by content (task results, streamed activations, basis files) hashes through
here, so equal keys mean equal inputs. torch is imported only to fingerprint a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from pathlib import Path
from typing import Any, Sequence

# Cached beside the model, never on it: user modules stay untouched. The value remembers each
# tensor's (data_ptr, _version) so an in-place weight update invalidates the cache cheaply.
_CACHE: "weakref.WeakKeyDictionary[Any, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _stamp(state: dict) -> tuple:
    return tuple((name, t.data_ptr(), t._version) for name, t in state.items())


def model_fingerprint(model) -> str:
    """32 hex digits identifying a model's architecture (module types) and every weight/buffer.

    Works for a VisionModel (its mean/std buffers are part of the state dict, so preprocessing
    counts) or any nn.Module.
    """
    import torch

    state = model.state_dict(keep_vars=True)
    stamp = _stamp(state)
    cached = _CACHE.get(model)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    h = hashlib.blake2b(digest_size=16)
    for name, module in model.named_modules():
        h.update(f"{name}:{type(module).__module__}.{type(module).__qualname__};".encode())
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        t = t.cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw bits
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    digest = h.hexdigest()
    _CACHE[model] = (stamp, digest)
    return digest


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, tuples as lists); TypeError on non-JSON data."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=_reject)


def _reject(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars/arrays: record the numbers, not the object
        return obj.tolist()
    raise TypeError(f"task params must be JSON data, got {type(obj).__name__}: {obj!r}")


def content_hash(*parts: Any, length: int = 32) -> str:
    """Hex digest of the canonical JSON of `parts`."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:length]


def image_list_signature(paths: Sequence[str | os.PathLike]) -> str:
    """Hash of (resolved path, size, mtime) of every image: cheap, and changes when a file does."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]
