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


EXECUTORS = ("local", "ray")

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

    def __init__(self, task: Task, out_dir: Path, loader: Optional[Callable[[], Any]],
                 store: Optional[TaskStore] = None):
        self.task = task
        self.out_dir = out_dir
        self._loader = loader
        self._store = store

    def input(self, name: str) -> TaskResult:
        """The finished result of the input task `name` (the executor runs inputs first)."""
        if name not in self.task.inputs:
            raise KeyError(f"task {self.task.kind} has no input {name!r} (inputs: {', '.join(self.task.inputs)})")
        res = self._store.load(self.task.inputs[name]) if self._store is not None else None
        if res is None:
            raise RuntimeError(f"input {name!r} of task {self.task.kind} is not finished")
        return res

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
        """A torch.Generator on the model's device, seeded (docs/conventions.md: seeds passed explicitly)."""
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
    ctxs = [TaskContext(t, s, loader, store) for t, s in zip(tasks, stagings)]
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

def _closure(tasks: Iterable[Task]) -> dict[str, Task]:
    """Every task and, recursively, its inputs (each once, inputs first)."""
    out: dict[str, Task] = {}

    def visit(t: Task) -> None:
        if t.key in out:
            return
        for dep in t.inputs.values():
            visit(dep)
        out[t.key] = t
    for t in tasks:
        visit(t)
    return out


def run_tasks(tasks: Iterable[Task], cache_dir: str | os.PathLike | TaskStore, *, jobs: int = 1,
              loader: Optional[Callable[[], Any]] = None, model: Any = None, progress: bool = True,
              desc: str = "tasks", raise_on_failure: bool = True,
              expand: Optional[Callable[[Task, TaskResult], Sequence[Task]]] = None,
              executor: str = "local", ray_address: Optional[str] = None,
              gpus_per_worker: float = 0.0) -> BuildReport:
    """Run every task (and its inputs) whose result is not already in the cache; a BuildReport.

    The tasks form a graph: a task runs once all its `inputs` are finished (waves of ready
    tasks, each batched and pooled as one run). `expand(task, result)` may name more tasks once
    a task has finished (e.g. the thumbnails of a circuit's nodes); they join the same graph.
    jobs=1 runs in this process (pass `model` to reuse an already loaded one, else `loader`);
    jobs>1 uses a spawned process pool where each worker calls `loader` once; executor="ray" runs
    the same groups on Ray actors (`ray_executor`; a local Ray instance unless `ray_address`).
    Failures do not
    stop other tasks (a task whose input failed fails too); afterwards the first one is raised
    (UserError as is, else TaskError).
    """
    from tqdm import tqdm

    if executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r} (expected one of {', '.join(EXECUTORS)})")
    if executor == "ray":
        from .ray_executor import require_ray

        require_ray()
    store = cache_dir if isinstance(cache_dir, TaskStore) else TaskStore(cache_dir)
    store.root.mkdir(parents=True, exist_ok=True)
    store.clean_stale()
    start = time.perf_counter()
    pending = _closure(tasks)
    report = BuildReport()
    errors: list[BaseException] = []
    if model is not None and executor != "ray":  # Ray workers need a recipe they can load (ModelRef)
        loader = loader or _Given(id(model))
        _MODELS[loader] = model
    bar = tqdm(total=len(pending), desc=desc, unit="task", file=sys.stderr,
               disable=not progress or not pending, dynamic_ncols=True)
    seen: set[str] = set()
    runner = None
    if executor == "ray":
        from .ray_executor import RayRunner

        runner = RayRunner(store, loader, jobs, ray_address, gpus_per_worker)
    try:
        while pending:
            failed_keys = {t.key for t, _ in report.failed}
            for key, t in list(pending.items()):  # inputs failed: fail without running
                bad = [n for n, d in t.inputs.items() if d.key in failed_keys]
                if bad:
                    report.failed.append((t, f"input {bad[0]!r} failed"))
                    errors.append(TaskError(f"input {bad[0]!r} of {t.describe()} failed"))
                    bar.update(1)
                    del pending[key]
            wave = {k: t for k, t in pending.items() if all(d.key in report.results for d in t.inputs.values())}
            if not wave:
                break
            for k in wave:
                del pending[k]
            _run_wave(wave, store, jobs, loader, report, errors, bar, runner)
            seen.update(wave)
            if expand is not None:
                for k, t in wave.items():
                    if k in report.results:
                        for extra in _closure(expand(t, report.results[k])).values():
                            if extra.key not in seen and extra.key not in pending and extra.key not in report.results:
                                pending[extra.key] = extra
                                bar.total += 1
    finally:
        bar.close()
        if runner is not None:
            runner.close()
            store.clean_stale()  # staging folders of workers that died (and were retried) go now
        if model is not None and executor != "ray":
            _MODELS.pop(loader, None)
    report.seconds = time.perf_counter() - start
    if errors and raise_on_failure:
        first_task, first_msg = report.failed[0]
        if isinstance(errors[0], UserError):
            raise errors[0]
        total = report.computed + report.reused + len(report.failed)
        raise TaskError(f"{len(errors)} of {total} tasks failed ({report.computed} computed, "
                        f"{report.reused} reused, results kept); first: {first_task.describe()}: "
                        f"{first_msg}") from errors[0]
    return report


def _run_wave(unique: dict[str, Task], store: TaskStore, jobs: int, loader, report: BuildReport,
              errors: list, bar, runner=None) -> None:
    """Run one wave of ready tasks (reusing finished ones), batched and pooled."""
    todo: list[Task] = []
    for key, t in unique.items():
        done = store.load(key)
        if done is not None:
            report.results[key] = done
            report.reused += 1
            bar.update(1)
        else:
            todo.append(t)
    # Batches are formed over ALL tasks, done or not, so a resumed build computes exactly the
    # batches a clean build would (a batch's pixels may depend on its members); a batch runs
    # if any member is missing, and only the missing members are published.
    missing = {t.key for t in todo}
    groups = [g for g in group_tasks(list(unique.values())) if any(t.key in missing for t in g)]
    for t in todo:
        task_function(t.kind)  # unknown kinds fail before any work starts

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

    if runner is not None:
        runner.run(groups, finished, lambda t, exc: failed(t, exc) if t.key in missing else None, done_elsewhere)
    elif jobs <= 1 or len(groups) <= 1:
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
