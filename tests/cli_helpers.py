"""Run the CLI in-process and check the bad-input contract (exit 2, one line, no traceback)."""

from __future__ import annotations

import contextlib
import io

from vizsuite.cli import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `vizsuite ARGV`, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_bad_input(*argv: str, contains: str = "") -> str:
    """Assert the command fails as bad input: exit 2 and exactly one stderr line, no traceback."""
    code, out, err = run_cli(*argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    if contains:
        assert contains.lower() in err.lower(), err
    return lines[0]
