"""`vizsuite` command line: parses, validates, calls the library, maps errors to exit codes.

Each subcommand lives in its own module with `register(subparsers)`; add new ones to COMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Optional, Sequence

from .. import __version__
from ..errors import UserError

COMMANDS = ["models", "layers", "predict", "render", "attribute", "gallery", "atlas", "explain", "dictionary"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2 (no usage dump)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


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
    try:
        args = build_parser().parse_args(argv)
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
