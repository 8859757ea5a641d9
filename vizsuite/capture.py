"""Frozen inference copies, layer listings, and the reading face of the hook manager.

    with Capture(model, ["blocks.4", "blocks.5"]) as cap:
        acts = cap(images)          # runs only as far as blocks.5

`Capture` is `hooks.Hooks` (one manager for reads and writes; docs/hooks.md); units, their
grammar and validation live in `vizsuite.units` (docs/units.md).
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections import OrderedDict
from typing import Optional, Sequence

import torch
from torch import nn

from .hooks import Hooks, activations, resolve
from .units import LayerInfo, Unit, check_unit, parse_unit
from .zoo.spec import VisionModel

#: the reading face of the hook manager (same class)
Capture = Hooks

__all__ = ["Capture", "Hooks", "LayerInfo", "Unit", "activations", "check_unit", "frozen_copy", "inference_copy",
           "leaf_modules", "list_layers", "parse_unit", "resolve", "shared_copy"]


# ---------------------------------------------------------------- inference copies

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def leaf_modules(module: nn.Module):
    """Leaves in registration order, but a batch norm counts as a leaf even with children.

    timm's BatchNormAct2d holds `drop` and `act` as children; descending into it (as zennit's
    SequentialMergeBatchNorm does) would never see a conv followed by a batch norm there.
    """
    children = list(module.children())
    if not children or isinstance(module, _BATCH_NORMS):
        yield module
        return
    for child in children:
        yield from leaf_modules(child)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, _CONVS) and isinstance(bn, _BATCH_NORMS)
            and bn.running_mean is not None and bn.running_var is not None
            and conv.out_channels == bn.num_features)


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.Module) -> None:
    scale = (bn.running_var.double() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    w = conv.weight
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    conv.weight = nn.Parameter((w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype),
                               requires_grad=False)
    conv.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)


def _outputs(model: nn.Module, x: torch.Tensor, layers: Sequence[str], output: bool) -> list[torch.Tensor]:
    if not layers:
        out = model(x)
        return [out] if isinstance(out, torch.Tensor) else []
    with Capture(model, layers, stop_early=not output, detach=True) as cap:
        acts = cap(x)
    return [acts[n] for n in layers] + ([cap.output] if isinstance(cap.output, torch.Tensor) else [])


@torch.no_grad()
def inference_copy(model: nn.Module, example: torch.Tensor, keep: Sequence[str] = (), output: bool = True,
                   channels_last: bool = True, fold_batchnorm: bool = True,
                   dtype: Optional[torch.dtype] = None) -> nn.Module:
    """A frozen, faster copy of `model` for loops that need gradients of the input only.

    The copy is in eval mode with weights that need no gradient; every batch norm (with running
    statistics) that directly follows a convolution is folded into that convolution and leaves
    the forward pass (a plain batch norm becomes Identity, timm's BatchNormAct2d keeps its
    activation), and 4-D weights are stored channels_last. Convolutions named in `keep`, whose
    own outputs are read, keep their batch norm. The fold is checked on `example`: the `keep`
    layers' outputs, and the model output unless `output=False` (then the check stops at the
    last `keep` layer), must match the original's, else (a convolution output that is also used
    elsewhere) the copy is returned unfolded. `dtype` (e.g. torch.bfloat16): after the fold
    (checked in the model's own precision) the copy's floating weights and buffers are stored in
    it, once, so a loop computing in that precision casts no weight per step; the caller feeds
    inputs of that dtype. `model` itself is never changed; a model that cannot be copied (some
    TorchScript modules) is returned as it is (not cast: check the result's dtype).
    """
    try:
        net = copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - copying is an optimization, never a requirement
        return model
    net.eval().requires_grad_(False)
    keep = list(dict.fromkeys(keep))
    output = output or not keep
    keep_ids = {id(resolve(net, name)) for name in keep}
    try:
        folded = fold_batchnorm and _fold_all(net, keep_ids)
    except Exception:  # noqa: BLE001 - e.g. a parametrized weight that refuses assignment
        return inference_copy(model, example, keep, output, channels_last, fold_batchnorm=False, dtype=dtype)
    if folded:
        modes = [(m, m.training) for m in model.modules()]
        try:
            model.eval()  # the reference needs running statistics; the caller's flags come back below
            expected = _outputs(model, example, keep, output)
        finally:
            for m, training in modes:
                m.training = training
        if not all(_close(a, b) for a, b in zip(_outputs(net, example, keep, output), expected)):
            return inference_copy(model, example, keep, output, channels_last, fold_batchnorm=False,
                                  dtype=dtype)
    if dtype is not None:
        net.to(dtype)  # floating tensors only; integer buffers (e.g. num_batches_tracked) stay
    if channels_last:
        for p in net.parameters():
            if p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
    return net


#: each live model's shared copies by options, newest last: a render's batches, a gallery's
#: layers and a TCAV run's passes (concepts, random pool, class gradients) build one copy
_SHARED: "weakref.WeakKeyDictionary[nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()
_SHARED_MAX = 4     # copies kept per model (an EfficientNet-Lite0 copy is ~19 MB)
_shared_lock = threading.Lock()


def state_signature(model: nn.Module) -> tuple:
    """Changes when the model's modules, hooks or tensors change (in place too: `_version`)."""
    mods = tuple((id(m), tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for m in model.modules())
    tensors = tuple((t.data_ptr(), t._version, t.dtype, t.device, t.shape)
                    for t in itertools.chain(model.parameters(), model.buffers()))
    return mods, tensors


def shared_copy(model: nn.Module, example: torch.Tensor, *, keep: Sequence[str] = (), output: bool = True,
                channels_last: bool = True, fold_batchnorm: bool = True, dtype: Optional[torch.dtype] = None,
                finish: tuple = ()) -> nn.Module:
    """`inference_copy(model, example, ...)`, built once and shared by every call in this thread
    with the same options while `model` is unchanged (same modules, hooks and tensor versions).

    Callers must leave the copy as they found it (hooks removed on exit, as `Hooks` does); a
    copy that is in use (more hooks on it than when it was built: a caller inside another's
    `Hooks` block) is not handed out again, the caller gets a fresh, unshared one.
    finish: `(function, *args)` applied once to a new copy (render's ReLU gradient rule); it is
    part of the key. A model that is not weak-referenceable gets a fresh copy every call."""
    options = (tuple(dict.fromkeys(keep)), bool(output), channels_last, fold_batchnorm, dtype, tuple(finish),
               threading.get_ident())   # threads never share a copy: their hooks would meet
    try:
        signature = state_signature(model)
        with _shared_lock:
            entries = _SHARED.setdefault(model, OrderedDict())
            hit = entries.get(options)
    except TypeError:
        signature, entries, hit = None, None, None
    if hit is not None and hit[0] == signature:
        if _hook_count(hit[1]) == hit[2]:
            with _shared_lock:
                entries.move_to_end(options)
            return hit[1]
        entries = None          # in use: a fresh copy, the cached one stays for its user
    net = inference_copy(model, example, keep=keep, output=output, channels_last=channels_last,
                         fold_batchnorm=fold_batchnorm, dtype=dtype)
    if net is model:
        return net
    if finish:
        finish[0](net, *finish[1:])
    if entries is not None:
        with _shared_lock:
            entries[options] = (signature, net, _hook_count(net))
            entries.move_to_end(options)
            while len(entries) > _SHARED_MAX:
                entries.popitem(last=False)
    return net


def _hook_count(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def frozen_copy(model: VisionModel, keep: Sequence[str] = (), output: bool = True) -> nn.Module:
    """The engines' shared frozen copy of a zoo model (`shared_copy`), its batch-norm fold checked
    on a seeded random image at the model's input size."""
    size = model.input_size
    device = model.mean.device if hasattr(model, "mean") else next(model.parameters()).device
    probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    return shared_copy(model, probe, keep=keep, output=output)


def _fold_all(net: nn.Module, keep_ids: set) -> int:
    parents = {id(child): (parent, name) for parent in net.modules() for name, child in parent.named_children()}
    pairs, last = [], None
    for leaf in leaf_modules(net):
        if last is not None and id(last) not in keep_ids and _foldable(last, leaf):
            pairs.append((last, leaf))
        last = leaf
    for conv, bn in pairs:
        _fold(conv, bn)
        children = OrderedDict(bn.named_children())
        # what the batch norm module did after normalizing (timm: drop, act) stays in the forward
        parent, name = parents[id(bn)]
        setattr(parent, name, nn.Sequential(children) if children else nn.Identity())
    return len(pairs)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = b.abs().max().clamp_min(1e-12)
    return bool(((a.float() - b.float()).abs().max() / scale) < 1e-3)


# ---------------------------------------------------------------- layer listing

def list_layers(model: VisionModel, input_size: Optional[int] = None,
                only: Optional[Sequence[str]] = None) -> list[LayerInfo]:
    """Every layer that outputs a tensor, in execution order, found with one dummy forward.

    only: list just these layers (the ones that exist and run); the forward then stops after
    the last of them, so validating a few units of an early layer costs a fraction of a full
    forward (render's start-up)."""
    size = input_size or model.input_size
    defaults = set(model.spec.default_layers)
    modules = dict(model.net.named_modules())
    names = [n for n in modules if n] if only is None else [n for n in dict.fromkeys(only) if n in modules]
    if not names:
        return []
    with Hooks(model, names, stop_early=only is not None, detach=True, strict=False) as h:
        with torch.no_grad():
            acts = h(torch.zeros(1, 3, size, size, device=model.mean.device))
    out = []
    for name, value in acts.items():  # first calls, in the order they ran
        if isinstance(value, torch.Tensor):
            shape = tuple(value.shape[1:])
            out.append(LayerInfo(name, type(modules[name]).__name__, shape, shape[0] if shape else 1,
                                 name in defaults))
    return out
