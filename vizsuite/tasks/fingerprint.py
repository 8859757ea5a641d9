"""Model weights fingerprint: a hash of architecture + state dict, cached per model instance."""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

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
