"""The model registry: model cards (models/*.toml) plus the MODEL forms users type."""

from __future__ import annotations

import math
import tomllib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import UserError, close_matches
from ..limits import check_size
from . import sources
from .spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, VisionModel, label_set

_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec to the registry (later registrations of a name replace earlier ones)."""
    _REGISTRY[spec.name] = spec
    return spec


def spec_from_card(card: dict) -> ModelSpec:
    """Build a ModelSpec from a parsed model card."""
    build = sources.arch_builder(card["builder"])
    labels = card.get("labels", "")
    return ModelSpec(
        name=card["name"],
        builder=build,
        pretrained=sources.weights_provider(card.get("weights", "user"), card["builder"], build),
        weights_source=card.get("weights", "user"),
        input_size=int(card.get("input_size", 224)),
        crop_pct=float(card.get("crop_pct", 0.875)),
        mean=tuple(card.get("mean", IMAGENET_MEAN)),
        std=tuple(card.get("std", IMAGENET_STD)),
        labels=label_set(labels) if labels else (),
        default_layers=tuple(card.get("default_layers", ())),
        description=card.get("description", ""),
        source=card.get("source", ""),
        licence=card.get("licence", ""),
        weights_hint=card.get("weights_hint", ""),
        relu_grad=card.get("relu_grad", "redirect"),
    )


@lru_cache(maxsize=1)
def _load_cards() -> None:
    for entry in sorted(resources.files("vizsuite.models").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            register(spec_from_card(tomllib.loads(entry.read_text("utf-8"))))


def list_models() -> list[ModelSpec]:
    """The registered zoo models, by name."""
    _load_cards()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def _timm_spec(arch: str) -> ModelSpec:
    import timm

    if not timm.is_model(arch):
        raise UserError(f"unknown timm model {arch!r}{close_matches(arch, timm.list_models())}")
    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    build = sources.arch_builder(f"timm:{arch}")
    return ModelSpec(
        name=f"timm:{arch}", builder=build, pretrained=sources.timm_cached(arch), weights_source="timm",
        input_size=int(cfg.get("input_size", (3, 224, 224))[-1]), crop_pct=float(cfg.get("crop_pct", 0.875)),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
        labels=label_set("imagenet") if cfg.get("num_classes", 1000) == 1000 else (),
        description=f"timm {arch}",
    )


def _torchvision_spec(arch: str) -> ModelSpec:
    import torchvision

    names = torchvision.models.list_models()
    if arch not in names:
        raise UserError(f"unknown torchvision model {arch!r}{close_matches(arch, names)}")
    try:
        meta = torchvision.models.get_model_weights(arch).DEFAULT.meta
    except ValueError:
        meta = {}
    return ModelSpec(
        name=f"torchvision:{arch}", builder=sources.arch_builder(f"torchvision:{arch}"),
        pretrained=sources.torchvision_cached(arch), weights_source="torchvision",
        labels=tuple(meta.get("categories", ())), description=f"torchvision {arch}",
    )


def _user_spec(text: str) -> ModelSpec:
    path, _, func = text.rpartition(":")
    if path.endswith(".py") and func:
        made = sources.call_user(sources.import_function(path, func), text)
        if isinstance(made, ModelSpec):
            user = made
            return made.replace(
                builder=lambda: sources.call_user(user.builder, f"{text} (its spec's builder)"),
                pretrained=(lambda: sources.call_user(user.pretrained, f"{text} (its spec's pretrained)"))
                if user.pretrained is not None else None)
        if not isinstance(made, nn.Module):
            raise UserError(f"{text} returned {type(made).__name__}, expected an nn.Module or a ModelSpec")
        return ModelSpec(name=text, builder=lambda: made, description=f"user model {text}")
    if text.endswith((".pt", ".pth", ".ts", ".jit")):
        return ModelSpec(name=text, builder=lambda: sources.load_torchscript(text),
                         description=f"TorchScript {text}")
    raise UserError(f"cannot read model {text!r}")


def get_spec(name: str) -> ModelSpec:
    """Resolve a MODEL argument (zoo name, `timm:`/`torchvision:` name, or user file)."""
    _load_cards()
    if name in _REGISTRY:
        return _REGISTRY[name]
    kind, sep, rest = name.partition(":")
    if sep and kind == "timm":
        return _timm_spec(rest)
    if sep and kind == "torchvision":
        return _torchvision_spec(rest)
    if name.endswith((".pt", ".pth", ".ts", ".jit")) or ".py:" in name:
        return _user_spec(name)
    raise UserError(f"unknown model {name!r}{close_matches(name, _REGISTRY)}; "
                    f"see `vizsuite models` (also timm:NAME, torchvision:NAME, file.py:function, model.pt)")


def load_model(name: str | ModelSpec, *, weights: Optional[str] = None, random_weights: bool = False,
               mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
               input_size: Optional[int] = None, device: str | torch.device = "cpu") -> VisionModel:
    """Build a model ready for inspection: eval mode, frozen weights, preprocessing inside.

    Weights come from `weights` (a state-dict file) if given, else the spec's pretrained source;
    `random_weights=True` keeps the seeded random initialization.
    """
    if weights is not None and random_weights:
        raise UserError("--weights and --random-weights contradict each other: give one")
    spec = name if isinstance(name, ModelSpec) else get_spec(name)
    overrides = {}
    if mean is not None:
        overrides["mean"] = _triple(mean, "--mean")
    if std is not None:
        overrides["std"] = _triple(std, "--std")
    if input_size is not None:
        if input_size < 16:
            raise UserError(f"--input-size must be at least 16, got {input_size}")
        check_size(int(input_size), "--input-size")
        overrides["input_size"] = int(input_size)
    if overrides:
        spec = spec.replace(**overrides)
    if weights is not None:
        net = sources.apply_state_dict(spec.builder(), sources.load_state_dict_file(weights), str(weights))
    elif random_weights or spec.weights_source == "none":
        net = spec.builder()
    elif spec.pretrained is None:
        hint = spec.weights_hint or "pass --weights FILE (a state dict) or --random-weights"
        raise UserError(f"model {spec.name} ships without weights: {hint}")
    else:
        net = spec.pretrained()
    _check_finite_weights(net, spec.name)
    if not spec.labels:
        spec = spec.replace(labels=_numbered_labels(net, spec))
    model = VisionModel(net, spec).eval().to(device)
    model.requires_grad_(False)
    return model


def _check_finite_weights(net: nn.Module, name: str) -> None:
    """NaN or inf in any weight makes every result meaningless: refuse the model up front."""
    with torch.no_grad():
        for key, t in net.state_dict().items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise UserError(f"model {name} has {bad} non-finite (NaN/inf) value(s) in weight {key}")


def _triple(values: Sequence[float], flag: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise UserError(f"{flag} takes 1 or 3 numbers, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{flag} values must be finite numbers, got {', '.join(map(str, values))}")
    if flag == "--std" and any(v <= 0 for v in values):
        raise UserError("--std values must be positive")
    return values


def _numbered_labels(net: nn.Module, spec: ModelSpec) -> tuple[str, ...]:
    """Labels 'class 0'.. for models that ship none, sized by one dummy forward."""
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, len(spec.mean), spec.input_size, spec.input_size))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return ()
    return tuple(f"class {i}" for i in range(out.shape[1]))
