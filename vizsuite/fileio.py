"""Atomic file writes and the manifest.json every command leaves behind (torch-free)."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from . import __version__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Readers never see a half-written file, and an interrupted write leaves nothing behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp files are private (0600); the result gets the mode a plain open() would give
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_output_dir(path: str | os.PathLike) -> Path:
    """UserError unless `path` is (or can be created as) a writable folder; run before any work."""
    from .errors import UserError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"output {path} exists and is not a folder")
    parent = path
    while not parent.exists() and parent != parent.parent:  # the nearest existing ancestor
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"output {path} is under {parent}, which is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"output {path}: folder {parent} is not writable")
    return path


def current_umask() -> int:
    """The process umask, read without changing it (Linux /proc), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically (indented, keys kept in insertion order; NaN/inf become null)."""
    return write_text(path, dumps(data, indent=2) + "\n")


def dumps(data: Any, **kwargs: Any) -> str:
    """json.dumps that writes strict JSON: NaN and inf (invalid JSON) become null."""
    return json.dumps(finite(data), allow_nan=False, default=json_default, **kwargs)


def finite(data: Any) -> Any:
    """`data` with every non-finite float (and float arrays' elements) replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    if hasattr(data, "tolist") and not isinstance(data, (str, bytes)):
        return finite(data.tolist())
    return data


def json_default(obj: Any) -> Any:
    """`json.dump(default=...)` for numpy values and paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def write_manifest(out_dir: str | os.PathLike, items: list[dict], command: list[str] | None = None,
                   **extra: Any) -> Path:
    """Write `out_dir/manifest.json` in the shared format (docs/conventions.md)."""
    data = {
        "vizsuite": __version__,
        "command": list(sys.argv) if command is None else list(command),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
        "items": items,
    }
    return write_json(Path(out_dir) / "manifest.json", data)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (staging folders of dead processes may go)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
