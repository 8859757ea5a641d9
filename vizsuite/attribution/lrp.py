"""LRP through zennit: named composites, a name-mapped custom composite, and the LRP pass.

The model wrapper normalizes `(x - mean) / std` before the network. LRP runs on the network
with the normalized input z as its input layer (relevance is not a gradient, so it must not be
pushed through the normalization's 1/std); since the normalization is per-pixel and bijective,
the relevance of pixel z[c, y, x] is the relevance of x[c, y, x]. Box bounds for ZBox are the
[0, 1] limits mapped into z's space.
"""

from __future__ import annotations

import fnmatch
import re
import weakref
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from zennit import composites as zc
from zennit import rules as zr
from zennit.core import Composite
from zennit.types import Linear as ZLinear

from ..errors import UserError, close_matches
from .canonizers import canonized, canonizers_for

# Module types zennit's base layer map does not know that must pass relevance unchanged:
# local response normalization (Inception v1) is a contrast operation with no relevance of its
# own, and timm's own activation classes are not subclasses of torch's.
def _extra_pass_types() -> tuple[type, ...]:
    types: list[type] = [nn.LocalResponseNorm]
    try:
        from timm.layers import activations, activations_me
        for mod in (activations, activations_me):
            types += [obj for obj in vars(mod).values()
                      if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__module__ == mod.__name__]
    except ImportError:  # timm is a dependency, but the LRP code does not need it
        pass
    return tuple(types)


EXTRA_PASS = _extra_pass_types()


def extra_layer_map() -> list:
    """Layer-map entries we prepend to every zennit composite (see EXTRA_PASS)."""
    return [(EXTRA_PASS, zr.Pass())]


COMPOSITES = {
    "epsilon_plus_flat": "EpsilonPlusFlat",
    "epsilon_gamma_box": "EpsilonGammaBox",
    "epsilon_alpha2_beta1": "EpsilonAlpha2Beta1",
    "epsilon_alpha2_beta1_flat": "EpsilonAlpha2Beta1Flat",
    "epsilon_plus": "EpsilonPlus",
    "custom": "NameLayerMapComposite",
}
DEFAULT_COMPOSITE = "epsilon_plus_flat"

_RULES: dict[str, Callable[[Optional[float]], object]] = {
    "zero": lambda p: zr.Epsilon(epsilon=1e-12 if p is None else p),   # LRP-0 (tiny eps avoids 0/0)
    "epsilon": lambda p: zr.Epsilon(epsilon=1e-6 if p is None else p),
    "zplus": lambda p: zr.ZPlus(),
    "gamma": lambda p: zr.Gamma(gamma=0.25 if p is None else p),
    "alpha2beta1": lambda p: zr.AlphaBeta(alpha=2.0, beta=1.0),
    "alpha1beta0": lambda p: zr.AlphaBeta(alpha=1.0, beta=0.0),
    "flat": lambda p: zr.Flat(),
    "wsquare": lambda p: zr.WSquare(),
    "pass": lambda p: zr.Pass(),
    "norm": lambda p: zr.Norm(),
}


def composite_key(name: str) -> str:
    """'EpsilonPlusFlat', 'epsilon-plus-flat', 'custom:...' -> 'epsilon_plus_flat' / 'custom'."""
    base = name.split(":", 1)[0].strip()
    key = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", base).lower().replace("-", "_")
    key = key.replace("alpha_2", "alpha2").replace("beta_1", "beta1")
    if key not in COMPOSITES:
        raise UserError(f"unknown LRP composite {name!r}{close_matches(key, COMPOSITES)}; "
                        f"choose from {', '.join(COMPOSITES)} (custom:LAYER=RULE,...)")
    return key


def parse_rules(text: str) -> list[tuple[str, str]]:
    """'conv_stem=flat,blocks.*=gamma(0.5),classifier=epsilon' -> [(pattern, rule), ...]."""
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(";" if ";" in text else ","))):
        pattern, sep, rule = part.partition("=")
        if not sep or not pattern.strip() or not rule.strip():
            raise UserError(f"bad custom rule {part!r}: expected LAYER_PATTERN=RULE")
        rule_factory(rule.strip())  # validate early
        pairs.append((pattern.strip(), rule.strip()))
    if not pairs:
        raise UserError("custom composite needs rules: custom:LAYER_PATTERN=RULE,...")
    return pairs


def rule_factory(text: str) -> Callable[[], object]:
    """'gamma(0.5)' -> a function building that zennit rule; UserError for unknown names."""
    m = re.fullmatch(r"\s*([a-z0-9_]+)\s*(?:\(\s*([-+0-9.eE]+)\s*\))?\s*", text.lower())
    if not m or m.group(1) not in _RULES:
        raise UserError(f"unknown LRP rule {text!r}{close_matches(text, _RULES)}; choose from {', '.join(_RULES)}")
    param = float(m.group(2)) if m.group(2) else None
    return lambda: _RULES[m.group(1)](param)


def build_composite(name: str, net: nn.Module, *, low: Optional[torch.Tensor] = None,
                    high: Optional[torch.Tensor] = None, rules=None, epsilon: Optional[float] = None,
                    gamma: Optional[float] = None, stabilizer: Optional[float] = None,
                    canonizers="auto", keep: Sequence[nn.Module] = ()) -> Composite:
    """A zennit composite by name, with our canonizers and extra pass-through layer types.

    `rules` (custom composite): [(pattern, rule)] or 'pattern=rule,...'; patterns are fnmatch
    patterns over the network's dotted module names, first match wins; modules no pattern
    matches get zennit's base map (activations pass, sums/avg-pools norm, batch norms pass).
    """
    key = composite_key(name)
    if name.startswith("custom:") and rules is None:
        rules = name.split(":", 1)[1]
    cans = canonizers_for(net, keep=keep) if canonizers == "auto" else list(canonizers or [])
    kwargs = {}
    if epsilon is not None:
        kwargs["epsilon"] = float(epsilon)
    if stabilizer is not None:  # denominators of the non-epsilon rules (zplus, gamma, norm, ...)
        kwargs["stabilizer"] = float(stabilizer)
    if key == "custom":
        if rules is None:
            raise UserError("custom composite needs rules (custom:LAYER_PATTERN=RULE,...)")
        pairs = parse_rules(rules) if isinstance(rules, str) else [(p, r) for p, r in rules]
        modules = {n: m for n, m in net.named_modules() if n}
        names = list(modules)
        name_map, used = [], set()
        for pattern, rule in pairs:
            # parametric rules only make sense on conv/linear layers, so a broad pattern such as
            # 'blocks.*' does not put an epsilon rule on activations or batch norms
            parametric = rule.split("(")[0].strip().lower() not in ("pass", "norm")
            hit = tuple(n for n in names if fnmatch.fnmatchcase(n, pattern) and n not in used
                        and (not parametric or isinstance(modules[n], ZLinear)))
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise UserError(f"custom rule pattern {pattern!r} matches no layer"
                                f"{close_matches(pattern, names)}")
            used.update(hit)
            # one rule instance per module: zennit hooks store per-module state
            name_map.append((hit, rule_factory(rule)()))
        return zc.NameLayerMapComposite(name_map=name_map,
                                        layer_map=extra_layer_map() + zc.layer_map_base(
                                            kwargs.get("stabilizer", 1e-6)),
                                        canonizers=cans)
    cls = getattr(zc, COMPOSITES[key])
    if key == "epsilon_gamma_box":
        if gamma is not None:
            kwargs["gamma"] = float(gamma)
        return cls(low=low, high=high, layer_map=extra_layer_map(), canonizers=cans, **kwargs)
    if gamma is not None:
        raise UserError(f"gamma applies to epsilon_gamma_box, not {key}")
    return cls(layer_map=extra_layer_map(), canonizers=cans, **kwargs)


# Networks whose canonized output we already compared with the original (per canonizer set).
_VERIFIED: "weakref.WeakKeyDictionary[nn.Module, set]" = weakref.WeakKeyDictionary()


def verify_canonizers(net: nn.Module, z: torch.Tensor, canonizers: Sequence, tol: float = 1e-4) -> None:
    """Once per network: check canonizers leave the output unchanged (guards unknown architectures).

    A canonizer pairs layers by registration order; a model registering modules out of forward
    order could be rewritten wrongly, which would silently corrupt relevance.
    """
    tag = tuple(type(c).__name__ for c in canonizers)
    if not tag or tag in _VERIFIED.get(net, set()):
        return
    probe = z[:1].detach()
    with torch.no_grad():
        before = net(probe)
        with canonized(net, [c.copy() for c in canonizers]):
            after = net(probe)
    if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
        err = (before - after).abs().max().item()
        scale = max(1.0, before.abs().max().item())
        if not err <= tol * scale:
            raise UserError(f"LRP canonizers change this model's output (max difference {err:.3g}); "
                            f"its layers are not registered in forward order - pass canonizers=[] "
                            f"or a custom canonizer list")
    _VERIFIED.setdefault(net, set()).add(tag)
