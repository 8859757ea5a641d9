"""Executors: run tasks in-process or in a local process pool, reusing finished results.

    report = run_tasks(tasks, SITE / ".cache/tasks", jobs=4, loader=ModelRef("efficientnet_lite0"))
    report.result(task).path("unit.png"); print(report.summary())

Each pool worker loads the model once (lazily, on the first task that asks for `ctx.model`).
Workers are spawned, not forked: a forked child of a process that already ran torch's
thread pools can hang.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from ..errors import UserError
from .core import Task, batch_spec, group_tasks, install_registry, registry_snapshot, task_function
from .store import TaskResult, TaskStore


@dataclass(frozen=True)
class ModelRef:
    """A picklable recipe for loading a zoo model (what pool workers receive instead of a model)."""

    name: str
    weights: Optional[str] = None
    random_weights: bool = False
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    input_size: Optional[int] = None
    device: str = "cpu"

    def __call__(self):
        from ..zoo import load_model

        return load_model(self.name, weights=self.weights, random_weights=self.random_weights,
                          mean=self.mean, std=self.std, input_size=self.input_size, device=self.device)


# Every task runs on this many torch threads, in-process (--jobs 1) and in each pool worker:
# convolutions sum in an order that depends on the thread count, so a task's pixels would
# otherwise depend on --jobs (and a resumed build could mix both). --jobs N uses N x this.
TASK_THREADS = 2


class _TaskThreads:
    """Run a task body on TASK_THREADS torch threads, restoring the caller's count after."""

    def __enter__(self):
        try:
            import torch
        except ImportError:
            self.torch = None
            return self
        self.torch, self.before = torch, torch.get_num_threads()
        if self.before != TASK_THREADS:
            torch.set_num_threads(TASK_THREADS)
        return self

    def __exit__(self, *exc):
        if self.torch is not None and self.torch.get_num_threads() != self.before:
            self.torch.set_num_threads(self.before)


# one model per process and loader: workers load once, the in-process executor reuses the caller's
_MODELS: dict[Any, Any] = {}


class TaskContext:
    """What a task function gets besides its Task: a private output folder and the model."""

    def __init__(self, task: Task, out_dir: Path, loader: Optional[Callable[[], Any]]):
        self.task = task
        self.out_dir = out_dir
        self._loader = loader

    @property
    def model(self):
        """The model, loaded once per process (None-loader -> error)."""
        if self._loader is None:
            raise RuntimeError(f"task {self.task.kind} needs a model but the executor has no loader")
        if self._loader not in _MODELS:
            _MODELS[self._loader] = self._loader()
        return _MODELS[self._loader]

    @property
    def device(self):
        return self.model.mean.device if hasattr(self.model, "mean") else "cpu"

    def generator(self, seed: int):
        """A torch.Generator on the model's device, seeded (DESIGN.md: seeds passed explicitly)."""
        import torch

        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(seed))
        return gen

    def path(self, name: str) -> Path:
        """Where to write an output file (subfolders are created)."""
        p = self.out_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


def execute(task: Task, store: TaskStore, loader: Optional[Callable[[], Any]] = None) -> TaskResult:
    """Compute one task now (no reuse check) and publish its result."""
    result = execute_group([task], store, loader)[0]
    return result if result is not None else store.load(task)


def execute_group(tasks: Sequence[Task], store: TaskStore,
                  loader: Optional[Callable[[], Any]] = None) -> list[Optional[TaskResult]]:
    """Compute a work unit (one task, or a batch of a batched kind); publish each missing result.

    Members already done (a crash between two publishes of one batch) are not republished: their
    entry is None.
    """
    stagings = [store.staging(t) for t in tasks]
    try:
        with _TaskThreads():
            return _execute_group(tasks, stagings, store, loader)
    finally:
        for staging in stagings:  # failed or interrupted: leave nothing behind
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _execute_group(tasks, stagings, store, loader) -> list[Optional[TaskResult]]:
    start = time.perf_counter()
    fn = task_function(tasks[0].kind)
    ctxs = [TaskContext(t, s, loader) for t, s in zip(tasks, stagings)]
    if batch_spec(tasks[0].kind):
        metas = list(fn(list(tasks), ctxs))
        if len(metas) != len(tasks):
            raise RuntimeError(f"batched task {tasks[0].kind} returned {len(metas)} results for {len(tasks)} tasks")
    else:
        if len(tasks) != 1:
            raise RuntimeError(f"task kind {tasks[0].kind} is not batched")
        metas = [fn(tasks[0], ctxs[0])]
    seconds = (time.perf_counter() - start) / len(tasks)
    return [None if store.is_done(t) else store.publish(t, s, m, seconds)
            for t, s, m in zip(tasks, stagings, metas)]


class TaskError(RuntimeError):
    """Some tasks failed; the others' results are saved."""


@dataclass
class BuildReport:
    """Outcome of a run: every finished result by key, and counts."""

    results: dict[str, TaskResult] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0
    failed: list[tuple[Task, str]] = field(default_factory=list)
    seconds: float = 0.0

    def result(self, task: Task) -> TaskResult:
        return self.results[task.key]

    def summary(self) -> str:
        total = self.computed + self.reused + len(self.failed)
        text = f"{total} tasks: {self.computed} computed, {self.reused} reused"
        return text + (f", {len(self.failed)} failed" if self.failed else "") + f" ({self.seconds:.1f}s)"


# ------------------------------------------------------------------------------ pool worker

_WORKER: dict[str, Any] = {}


def _worker_init(snapshot: dict, store_root: str, loader, sys_path: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    for p in reversed(sys_path):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        import torch

        torch.set_num_threads(TASK_THREADS)  # N workers x TASK_THREADS, not N x all cores
    except ImportError:
        pass
    install_registry(snapshot)
    _WORKER.update(store=TaskStore(store_root), loader=loader)


def _worker_run(group: list[Task]) -> list[Optional[tuple[dict, float]]]:
    return [None if r is None else (r.meta, r.seconds)
            for r in execute_group(group, _WORKER["store"], _WORKER["loader"])]


# ------------------------------------------------------------------------------ run_tasks

def run_tasks(tasks: Iterable[Task], cache_dir: str | os.PathLike | TaskStore, *, jobs: int = 1,
              loader: Optional[Callable[[], Any]] = None, model: Any = None, progress: bool = True,
              desc: str = "tasks", raise_on_failure: bool = True) -> BuildReport:
    """Run every task whose result is not already in the cache; return a BuildReport.

    jobs=1 runs in this process (pass `model` to reuse an already loaded one, else `loader`);
    jobs>1 uses a spawned process pool where each worker calls `loader` once. Failures do not
    stop other tasks; afterwards the first one is raised (UserError as is, else TaskError).
    """
    from tqdm import tqdm

    store = cache_dir if isinstance(cache_dir, TaskStore) else TaskStore(cache_dir)
    store.root.mkdir(parents=True, exist_ok=True)
    store.clean_stale()
    start = time.perf_counter()
    unique: dict[str, Task] = {}
    for t in tasks:
        unique.setdefault(t.key, t)
    report = BuildReport()
    todo: list[Task] = []
    for key, t in unique.items():
        done = store.load(key)
        if done is not None:
            report.results[key] = done
            report.reused += 1
        else:
            todo.append(t)
    # Batches are formed over ALL tasks, done or not, so a resumed build computes exactly the
    # batches a clean build would (a batch's pixels may depend on its members); a batch runs
    # if any member is missing, and only the missing members are published.
    missing = {t.key for t in todo}
    groups = [g for g in group_tasks(list(unique.values())) if any(t.key in missing for t in g)]
    for t in todo:
        task_function(t.kind)  # unknown kinds fail before any work starts
    if model is not None:
        loader = loader or _Given(id(model))
        _MODELS[loader] = model
    bar = tqdm(total=len(unique), initial=report.reused, desc=desc, unit="task", file=sys.stderr,
               disable=not progress or not unique, dynamic_ncols=True)
    errors: list[BaseException] = []

    def finished(t: Task, meta: dict, seconds: float) -> None:
        report.results[t.key] = TaskResult(t.key, t.kind, store.dir(t), meta, True, seconds)
        report.computed += 1
        bar.update(1)
        bar.set_postfix(computed=report.computed, reused=report.reused, refresh=False)

    def failed(t: Task, exc: BaseException) -> None:
        report.failed.append((t, f"{type(exc).__name__}: {exc}"))
        errors.append(exc)
        bar.update(1)

    def done_elsewhere(t: Task) -> None:
        # another build into the same cache finished it first (or a crash between two publishes
        # of a batch): its result counts as reused
        if t.key not in missing or t.key in report.results:
            return
        res = store.load(t)
        if res is None:
            failed(t, RuntimeError(f"task {t.describe()} finished without a result"))
            return
        report.results[t.key] = res
        report.reused += 1
        bar.update(1)

    try:
        if jobs <= 1 or len(groups) <= 1:
            for group in groups:
                try:
                    results = execute_group(group, store, loader)
                except Exception as exc:  # noqa: BLE001 - recorded, re-raised below
                    for t in group:
                        if t.key in missing:
                            failed(t, exc)
                else:
                    for t, res in zip(group, results):
                        if res is not None:
                            finished(t, res.meta, res.seconds)
                        else:
                            done_elsewhere(t)
        else:
            _run_pool(groups, store, loader, min(jobs, len(groups)), finished,
                      lambda t, exc: failed(t, exc) if t.key in missing else None, done_elsewhere)
    finally:
        bar.close()
        if model is not None:
            _MODELS.pop(loader, None)
    report.seconds = time.perf_counter() - start
    if errors and raise_on_failure:
        first_task, first_msg = report.failed[0]
        if isinstance(errors[0], UserError):
            raise errors[0]
        raise TaskError(f"{len(errors)} of {len(unique)} tasks failed ({report.computed} computed, "
                        f"{report.reused} reused, results kept); first: {first_task.describe()}: "
                        f"{first_msg}") from errors[0]
    return report


@dataclass(frozen=True)
class _Given:
    """Loader key for a model passed in directly (in-process only)."""

    ident: int

    def __call__(self):
        raise RuntimeError("model was given in-process; it cannot be loaded in a worker")


def _run_pool(groups: Sequence[list[Task]], store: TaskStore, loader, jobs: int, finished, failed,
              done_elsewhere=lambda t: None) -> None:
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                  initargs=(registry_snapshot(), str(store.root), loader, list(sys.path)))
    futures = {pool.submit(_worker_run, g): g for g in groups}
    try:
        for fut in cf.as_completed(futures):
            group = futures[fut]
            try:
                outcomes = fut.result()
            except cf.process.BrokenProcessPool as exc:
                for t in group:
                    failed(t, RuntimeError(f"a worker process died ({exc})"))
            except Exception as exc:  # noqa: BLE001
                for t in group:
                    failed(t, exc)
            else:
                for t, outcome in zip(group, outcomes):
                    if outcome is not None:
                        finished(t, *outcome)
                    else:
                        done_elsewhere(t)
    except BaseException:
        # Ctrl-C: stop now; finished results are already published; the killed workers'
        # staging folders are removed once they are gone.
        procs = list(getattr(pool, "_processes", {}).values())
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=10)
        pool.shutdown(wait=False, cancel_futures=True)
        store.clean_stale()
        raise
    pool.shutdown(wait=True)
