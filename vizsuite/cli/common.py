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
    group.add_argument("--max-size", type=int, metavar="PX",
                       help="largest input / rendered image size allowed (default 2048)")
    group.add_argument("--max-megapixels", type=float, metavar="MP",
                       help="largest photo allowed, in megapixels (default 100)")


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


MAX_SEED = 2**63 - 1


def check_seed(seed: int, flag: str = "--seed") -> int:
    """Seeds feed torch and numpy generators: 0 .. 2**63 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{flag} must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    return seed


def check_output(path) -> None:
    """The output folder must be creatable and writable: checked before the work, not after."""
    from ..fileio import check_output_dir

    check_output_dir(path)


def image_folder(path: str, flag: str):
    """A folder holding images (UserError naming the flag otherwise)."""
    from pathlib import Path

    from ..images import find_images

    d = Path(path)
    if not d.is_dir():
        raise UserError(f"{flag} {path}: not a folder")
    if not find_images(d):
        raise UserError(f"{flag} {path}: no images found")
    return d


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


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """--jobs, --executor local|ray, --ray-address, --gpus-per-worker (docs/scale.md)."""
    g = parser.add_argument_group("execution")
    g.add_argument("--jobs", type=int, metavar="N", help="worker processes (default 1; with ray: the cluster's CPUs)")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="run tasks in this machine's processes (default) or on Ray")
    g.add_argument("--ray-address", metavar="ADDR", help="a running Ray cluster (default: start a local one)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="GPUs each Ray worker asks for (with --device cuda)")


def executor_options(args: argparse.Namespace, model) -> dict:
    """run_tasks keywords from the execution flags: jobs, executor, and the model recipe (a
    ModelRef) that pool and Ray workers load once each."""
    from ..tasks import ModelRef

    jobs = getattr(args, "jobs", None) or 1
    if jobs < 1:
        raise UserError("--jobs must be at least 1")
    executor = getattr(args, "executor", "local") or "local"
    if executor == "ray":
        from ..tasks.ray_executor import require_ray

        require_ray()
    elif getattr(args, "ray_address", None):
        raise UserError("--ray-address needs --executor ray")
    if (getattr(args, "gpus_per_worker", 0) or 0) < 0:
        raise UserError("--gpus-per-worker must be 0 or more")
    remote = jobs > 1 or executor == "ray"
    loader = ModelRef(args.model, weights=args.weights, random_weights=bool(args.random_weights),
                      mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None,
                      input_size=args.input_size, device=str(model.mean.device)) if remote else None
    return {"jobs": jobs, "loader": loader, "executor": executor, "ray_address": getattr(args, "ray_address", None),
            "gpus_per_worker": getattr(args, "gpus_per_worker", 0.0) or 0.0}
