"""Errors that the CLI maps to exit codes (docs/conventions.md: 2 = bad input, 1 = unexpected)."""

from __future__ import annotations

import difflib
from typing import Iterable


class UserError(Exception):
    """Bad input or usage: the CLI prints the message on one line and exits with code 2."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' (did you mean: a, b?)' suffix for error messages, or '' when nothing is close."""
    choices = list(choices)
    matches = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if not matches:
        # substring hits help for dotted paths such as 'blocks.4' vs 'blocks.4.2'
        matches = [c for c in choices if word and word in c][:n]
    return f" (did you mean: {', '.join(matches)}?)" if matches else ""
