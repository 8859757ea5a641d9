"""Canonizers: temporary, exactly reversible rewrites that make LRP rules apply correctly.

They follow zennit's Canonizer interface (apply / register / remove / copy), so they plug into any
zennit composite. Each leaves the network's outputs unchanged and, on removal, leaves no
attribute, parameter or hook behind.

- `MergeBatchNorm`: folds every BatchNorm into the conv/linear right before it (timm's
  BatchNormAct2d included, whose activation stays in place).
- `ResidualCanonizer`: residual additions of timm EfficientNet/MobileNet blocks and torchvision
  ResNet/MobileNetV2/V3 blocks become a `Sum` module (zennit's Norm rule then splits relevance
  between the skip and the branch instead of copying it to both).
- `ConcatCanonizer`: torchvision Inception branch concatenations become a `Concat` module.

`canonizers_for(net)` returns the set for any network; `canonized(net, canonizers)` is the
context manager that always undoes them.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Optional, Sequence

import torch
from torch import nn
from zennit.canonizers import AttributeCanonizer, Canonizer
from zennit.canonizers import MergeBatchNorm as _ZennitMergeBatchNorm
from zennit.layer import Sum
from zennit.types import BatchNorm
from zennit.types import Linear as LinearTypes

from ..capture import leaf_modules
from ..zoo.inceptionv1 import Concat

__all__ = ["MergeBatchNorm", "ResidualCanonizer", "ConcatCanonizer", "Concat", "canonizers_for",
           "canonized", "apply_safely"]


def apply_safely(canonizer: Canonizer, root: nn.Module, candidates: Iterable) -> list:
    """Register a copy of `canonizer` per candidate; on any failure undo those already applied."""
    instances = []
    try:
        for args in candidates:
            instance = canonizer.copy()
            instance.register(*args)
            instances.append(instance)
    except BaseException:
        for instance in reversed(instances):
            instance.remove()
        raise
    return instances


# ---------------------------------------------------------------- BatchNorm

class MergeBatchNorm(_ZennitMergeBatchNorm):
    """Fold each BatchNorm into the linear layer registered right before it; exact and reversible.

    `keep`: linear layers whose own output must stay as it is (a hidden-unit target's layer:
    merging would change the unit's value), their batch norms are left alone.

    Unlike zennit's merge this also sets the batch norm's `eps` to 0 while merged: zennit leaves
    it, so the 'identity' batch norm still divides by sqrt(1 + eps), which for timm's eps=1e-3
    shifts EfficientNet logits by about a percent.
    """

    def __init__(self, keep: Sequence[nn.Module] = ()):
        super().__init__()
        self.eps = None
        self.keep = tuple(keep)

    def copy(self):
        return MergeBatchNorm(self.keep)

    def apply(self, root_module: nn.Module) -> list:
        pairs, last = [], None
        keep = {id(m) for m in self.keep}
        for leaf in leaf_modules(root_module):
            if (isinstance(last, LinearTypes) and isinstance(leaf, BatchNorm) and _has_stats(leaf)
                    and id(last) not in keep):
                pairs.append(((last,), leaf))
            last = leaf
        return apply_safely(self, root_module, pairs)

    def register(self, linears, batch_norm):
        self.eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self):
        super().remove()
        self.batch_norm.eps = self.eps


def _has_stats(bn: nn.Module) -> bool:
    return (getattr(bn, "running_mean", None) is not None and getattr(bn, "running_var", None) is not None
            and getattr(bn, "weight", None) is not None and getattr(bn, "bias", None) is not None)


# ---------------------------------------------------------------- residual additions

def _sum(a: torch.Tensor, b: torch.Tensor, module: nn.Module) -> torch.Tensor:
    return module.canonizer_sum(torch.stack([a, b], dim=-1))


def _timm_forward(self, x):
    """timm ConvBnAct / DepthwiseSeparableConv / InvertedResidual / EdgeResidual with the skip as Sum."""
    shortcut = x
    x = self.canonizer_original_forward(x)
    return _sum(self.drop_path(x), shortcut, self)


def _tv_mobilenet_forward(self, x):
    """torchvision MobileNetV2/V3 InvertedResidual (use_res_connect) with the skip as Sum."""
    return _sum(x, self.block(x) if hasattr(self, "block") else self.conv(x), self)


def _tv_resnet_basic_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return self.relu(_sum(identity, out, self))


def _tv_resnet_bottleneck_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    return self.relu(_sum(identity, out, self))


def _residual_attributes(name: str, module: nn.Module) -> Optional[dict]:
    """The attributes to overload on one module, or None if it has no residual addition."""
    kind = _residual_kind(module)
    if kind is None or "forward" in module.__dict__:  # already canonized (or patched by someone else)
        return None
    forward = {"timm": _timm_forward, "tv_mobilenet": _tv_mobilenet_forward,
               "tv_basic": _tv_resnet_basic_forward, "tv_bottleneck": _tv_resnet_bottleneck_forward}[kind]
    attributes = {"forward": forward.__get__(module), "canonizer_sum": Sum()}
    if kind == "timm":
        attributes["canonizer_original_forward"] = _TimmBody(module)
    return attributes


class _TimmBody:
    """A timm block's body (everything but `drop_path(x) + shortcut`), run by the block's own code.

    timm blocks decide on the skip with the instance attribute `has_skip`; we flip it off for the
    call and restore the exact original value afterwards, so the block's code is not duplicated.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, x):
        module = self.module
        saved = module.__dict__["has_skip"]
        module.__dict__["has_skip"] = False
        try:
            return type(module).forward(module, x)
        finally:
            module.__dict__["has_skip"] = saved


def _residual_kind(module: nn.Module) -> Optional[str]:
    cls = type(module)
    mod = cls.__module__
    if mod.startswith("timm.") and cls.__name__ in {"ConvBnAct", "DepthwiseSeparableConv", "InvertedResidual",
                                                     "EdgeResidual", "CondConvResidual"}:
        return "timm" if module.__dict__.get("has_skip", False) else None
    if mod.startswith("torchvision.models.mobilenetv"):
        if cls.__name__ == "InvertedResidual" and getattr(module, "use_res_connect", False):
            return "tv_mobilenet"
        return None
    if mod == "torchvision.models.resnet":
        return {"BasicBlock": "tv_basic", "Bottleneck": "tv_bottleneck"}.get(cls.__name__)
    return None


class _MappedCanonizer(AttributeCanonizer):
    """An AttributeCanonizer whose `apply` undoes every instance it registered if one fails."""

    def apply(self, root_module: nn.Module) -> list:
        found = [(m, a) for n, m in root_module.named_modules() if (a := self.attribute_map(n, m)) is not None]
        return apply_safely(self, root_module, found)


class ResidualCanonizer(_MappedCanonizer):
    """Residual additions become `canonizer_sum` modules (zennit `Sum`, Norm rule in composites).

    Overloads `forward` (and adds `canonizer_sum`) as instance attributes; removal deletes them,
    which brings back the class's forward.
    """

    def __init__(self):
        super().__init__(_residual_attributes)

    def copy(self):
        return ResidualCanonizer()


# ---------------------------------------------------------------- concatenations

def _tv_inception_forward(self, x):
    return self.canonizer_concat(self._forward(x))


def _concat_attributes(name: str, module: nn.Module) -> Optional[dict]:
    cls = type(module)
    if "forward" in module.__dict__:
        return None
    if cls.__module__ == "torchvision.models.googlenet" and cls.__name__ == "Inception":
        return {"forward": _tv_inception_forward.__get__(module), "canonizer_concat": Concat(dim=1)}
    return None


class ConcatCanonizer(_MappedCanonizer):
    """Inception branch joins as `Concat` modules (torchvision GoogLeNet's functional torch.cat).

    Concatenation is linear and its gradient splits relevance exactly by channel, so no rule is
    needed; the module makes the join visible to hooks (per-branch relevance). Our InceptionV1
    already joins branches with `vizsuite.zoo.inceptionv1.Concat`, so nothing is changed there.
    """

    def __init__(self):
        super().__init__(_concat_attributes)

    def copy(self):
        return ConcatCanonizer()


# ---------------------------------------------------------------- selection and context

CANONIZERS = {"batchnorm": MergeBatchNorm, "residual": ResidualCanonizer, "concat": ConcatCanonizer}


def canonizers_for(net: nn.Module, names: Optional[Sequence[str]] = None,
                   keep: Sequence[nn.Module] = ()) -> list[Canonizer]:
    """Fresh canonizer instances for `net` (all kinds by default; each is a no-op where it finds nothing).

    keep: modules whose outputs must not change (see MergeBatchNorm).
    """
    names = list(CANONIZERS) if names is None else list(names)
    return [MergeBatchNorm(keep) if n == "batchnorm" else CANONIZERS[n]() for n in names]


@contextlib.contextmanager
def canonized(net: nn.Module, canonizers: Sequence[Canonizer]) -> Iterator[nn.Module]:
    """Apply canonizers for the block's duration; always undo them (in reverse), also on error."""
    applied: list = []
    try:
        for canonizer in canonizers:
            applied.extend(canonizer.apply(net))
        yield net
    finally:
        for instance in reversed(applied):
            instance.remove()
