"""Arguments and helpers shared by subcommands (model selection, device, output)."""

from __future__ import annotations

import argparse

from ..errors import UserError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """MODEL positional plus --weights/--random-weights/--mean/--std/--input-size/--device."""
    parser.add_argument("model", metavar="MODEL",
                        help="efficientnet_lite0 | inceptionv1 | googlenet | torchvision:NAME | timm:NAME | "
                             "path/file.py:function | path/model.pt")
    group = parser.add_argument_group("model options")
    group.add_argument("--weights", metavar="PATH", help="state-dict file to load into the model")
    group.add_argument("--random-weights", action="store_true", help="keep seeded random weights")
    group.add_argument("--mean", type=_floats, metavar="M[,M,M]", help="input mean on [0,1] RGB (1 or 3 values)")
    group.add_argument("--std", type=_floats, metavar="S[,S,S]", help="input std (1 or 3 values)")
    group.add_argument("--input-size", type=int, metavar="PX", help="model input size in pixels")
    group.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto (default: cpu)")


def _floats(text: str) -> list[float]:
    """'0.5' or '0.485,0.456,0.406' -> list of floats (comma-separated keeps positionals unambiguous)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def resolve_device(text: str):
    """Parse --device; UserError for an unavailable device."""
    import torch

    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UserError(f"bad --device {text!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda given but no CUDA device is available")
    return device


def model_from_args(args: argparse.Namespace):
    """Load the model named by the shared model arguments."""
    from ..zoo import load_model

    return load_model(args.model, weights=args.weights, random_weights=args.random_weights,
                      mean=args.mean, std=args.std, input_size=args.input_size,
                      device=resolve_device(args.device))


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_basis_arg(parser: argparse.ArgumentParser) -> None:
    """--basis NAME=PATH (repeatable): feature bases for `LAYER/NAME:K` units (docs/units.md)."""
    parser.add_argument("--basis", action="append", default=[], metavar="NAME=PATH",
                        help="a basis file (directions or dictionary), or a folder holding basis.npz (as "
                             "`vizsuite dictionary` writes), for LAYER/NAME:K units; repeatable")


def bases_from_args(args: argparse.Namespace):
    """The BasisSet named by --basis (UserError for a bad spec or an unreadable file)."""
    from ..units import BasisSet

    return BasisSet.from_args(getattr(args, "basis", None))


def check_units(model, texts, bases, layers=None):
    """Parse and validate unit texts against the model (layer, index, position, and a basis's
    recorded layer and model); [(Unit, LayerInfo)]."""
    from ..capture import list_layers
    from ..hashing import model_fingerprint
    from ..units import check_unit, parse_unit

    layers = layers if layers is not None else list_layers(model)
    fp = model_fingerprint(model) if bases else None
    out = []
    for text in texts:
        unit = parse_unit(text, bases)
        out.append((unit, check_unit(unit, layers, fp)))
    return out
