"""`vizsuite` command line: parses, validates, calls the library, maps errors to exit codes.

Each subcommand lives in its own module with `register(subparsers)`; add new ones to COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import traceback
import warnings
from typing import Optional, Sequence

from .. import __version__
from ..errors import UserError
from .common import check_seed

COMMANDS = ["models", "layers", "predict", "render", "attribute", "gallery", "atlas", "explain", "ablate", "patch",
            "dictionary", "describe"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2 (no usage dump)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")

    def parse_known_args(self, args=None, namespace=None):
        # A subcommand's positionals may follow its options (`layers MODEL --json LAYER`):
        # leaf parsers parse intermixed (argparse refuses that for a parser with subcommands).
        if self._subparsers is None and not getattr(self, "_intermixing", False):
            self._intermixing = True
            try:
                namespace, extras = self.parse_known_intermixed_args(args, namespace)
            finally:
                self._intermixing = False
            _check_finite(namespace)
            return namespace, extras
        return super().parse_known_args(args, namespace)


def _check_finite(namespace: argparse.Namespace) -> None:
    """NaN or inf is never a meaningful option value (`--lr nan`, `--mean inf`): refuse it."""
    for dest, value in vars(namespace).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"--{dest.replace('_', '-')} must be a finite number, got {v}")
    if isinstance(getattr(namespace, "seed", None), int):
        check_seed(namespace.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vizsuite", description="Understand vision models from the inside: "
                     "feature visualization, attribution, galleries.")
    parser.add_argument("--version", action="version", version=f"vizsuite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: 0 done, 2 bad input (one line), 1 unexpected failure (one line; --debug for more)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    saved = os.environ.get("PYTHONWARNINGS")
    with warnings.catch_warnings():
        if not debug:
            # library warnings (torch.jit deprecations, captum's requires_grad notes, the
            # multiprocessing resource tracker) are not the user's doing: one-line output stays
            # one line. Worker processes inherit the setting through the environment.
            warnings.simplefilter("ignore")
            os.environ["PYTHONWARNINGS"] = "ignore"
        try:
            return _main(argv, debug)
        finally:
            if saved is None:
                os.environ.pop("PYTHONWARNINGS", None)
            else:
                os.environ["PYTHONWARNINGS"] = saved


def _main(argv: list, debug: bool) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "max_size", None) is not None or getattr(args, "max_megapixels", None) is not None:
            from ..limits import set_limits

            set_limits(args.max_size, args.max_megapixels)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place unexpected failures become one line
        if debug:
            traceback.print_exc()
        else:
            print(f"failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                  f"(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
