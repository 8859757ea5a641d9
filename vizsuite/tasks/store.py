"""On-disk results: `CACHE/<key>/...` published by one directory rename, `done.json` inside.

A task writes into a private staging folder `CACHE/.<key>.<pid>.<rand>.part/`; `done.json` (the
done marker, holding the returned metadata) is written last, then the folder is renamed onto
`CACHE/<key>/`. A crash at any point leaves either a complete result or a staging folder that
the next run deletes, never a half-written result.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..fileio import current_umask, finite, json_default, pid_alive
from .core import Task

DONE = "done.json"


@dataclass
class TaskResult:
    """A finished task: its folder, returned metadata, and whether this run computed it."""

    key: str
    kind: str
    dir: Path
    meta: dict = field(default_factory=dict)
    computed: bool = False
    seconds: float = 0.0

    def path(self, name: str) -> Path:
        """A file the task wrote (relative to its folder)."""
        return self.dir / name

    @property
    def value(self) -> Any:
        """The result as its kind's registered dataclass (`register_task(result=...)`), else the
        JSON metadata."""
        from .codec import from_json
        from .core import result_type

        tp = result_type(self.kind)
        return self.meta if tp is None else from_json(tp, self.meta)

    def files(self) -> list[str]:
        """Every file the task wrote (relative paths), the done marker excluded."""
        return sorted(str(p.relative_to(self.dir)) for p in self.dir.rglob("*")
                      if p.is_file() and p.name != DONE)


class TaskStore:
    """The task cache folder (e.g. `SITE/.cache/tasks`)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def dir(self, task: Task | str) -> Path:
        key = task.key if isinstance(task, Task) else task
        return self.root / key

    def is_done(self, task: Task | str) -> bool:
        return (self.dir(task) / DONE).is_file()

    def load(self, task: Task | str) -> Optional[TaskResult]:
        """The finished result, or None (also for a folder without its done marker)."""
        d = self.dir(task)
        try:
            record = json.loads((d / DONE).read_text("utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return TaskResult(record["key"], record["kind"], d, record.get("meta") or {},
                          computed=False, seconds=float(record.get("seconds", 0.0)))

    def clean_stale(self) -> int:
        """Delete staging folders of dead processes and result folders lacking a done marker."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for entry in self.root.iterdir():
            if entry.name.endswith(".part"):
                parts = entry.name.split(".")  # '', key, pid, rand, 'part'
                pid = int(parts[2]) if len(parts) >= 5 and parts[2].isdigit() else -1
                if not pid_alive(pid):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
            elif entry.is_dir() and not (entry / DONE).is_file():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    def staging(self, task: Task) -> Path:
        """A fresh private folder for the task to write into."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f".{task.key}.{os.getpid()}.", suffix=".part", dir=self.root))
        os.chmod(path, 0o777 & ~current_umask())  # mkdtemp's 0700 would stay on the published folder
        return path

    def publish(self, task: Task, staging: Path, meta: Any, seconds: float) -> TaskResult:
        """Write the done marker into `staging` (last), then rename it onto the result folder."""
        from .codec import to_json

        meta = to_json(meta)
        record = {"key": task.key, "kind": task.kind, "params": task.params, "meta": meta or {},
                  **({"inputs": {n: t.key for n, t in task.inputs.items()}} if task.inputs else {}),
                  "seconds": round(seconds, 4), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = staging / f".{DONE}.part"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(finite(record), fh, indent=1, allow_nan=False, default=json_default)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, staging / DONE)
        final = self.dir(task)
        if final.exists() and not (final / DONE).is_file():
            shutil.rmtree(final, ignore_errors=True)  # leftover of a crash between rename and now
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / DONE).is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)  # a concurrent build finished it first
        return TaskResult(task.key, task.kind, final, record["meta"], computed=True, seconds=seconds)
