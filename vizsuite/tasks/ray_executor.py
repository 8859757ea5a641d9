"""Run task groups on Ray (docs/scale.md): the same groups (batches) as the local pool, on Ray
actors that each load the model once, with results published into the task store.

An actor is a worker process holding the registry, the store and the model loader
(`ModelRef`); it runs `execute_group` exactly as a pool worker does (TASK_THREADS torch threads,
the same batches), so a Ray build computes the same results as a local build. A worker that
dies mid-task (killed, out of memory) is restarted by Ray and the task retried
(`max_restarts`, `max_task_retries`); the result of a half-finished task is never visible: it
is published by one directory rename (`TaskStore.publish`), also across processes and hosts
when the store is on a shared filesystem. Ray is an optional extra: `pip install -e ".[ray]"`.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional, Sequence

from ..errors import UserError
from .core import Task, registry_snapshot
from .store import TaskStore

#: how often Ray restarts a dead worker and retries the task it was running
MAX_RETRIES = 3


def require_ray():
    """The ray module, or one line saying how to install it (exit 2)."""
    try:
        import ray
    except ImportError:
        raise UserError('--executor ray needs Ray: pip install -e ".[ray]" (or pip install ray)') from None
    return ray


def _actor_class(ray, gpus: float):
    from .executor import TASK_THREADS, _worker_init, _worker_run

    # a worker runs its tasks on TASK_THREADS torch threads (as every executor does: pixels do
    # not depend on where a task ran), so it asks Ray for that many CPUs
    @ray.remote(num_cpus=TASK_THREADS, num_gpus=gpus, max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES)
    class TaskWorker:
        """One Ray worker: the registry and store installed once, the model loaded on first use."""

        def __init__(self, snapshot, store_root, loader, sys_path):
            _worker_init(snapshot, store_root, loader, sys_path)

        def run(self, index: int, group: list[Task]):
            return index, _worker_run(group)

        def pid(self) -> int:
            return os.getpid()

    return TaskWorker


class RayCluster:
    """Connects to (or starts) Ray for one run; shuts down only what it started."""

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None):
        self.ray = require_ray()
        self.started = False
        if not self.ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                          logging_level="ERROR")
            if address:
                kwargs["address"] = address
            else:  # a local instance sized to this machine
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            try:
                self.ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"cannot connect to Ray at {address or 'a local instance'}: "
                                f"{str(exc).splitlines()[0][:160]}") from None
            self.started = True

    def workers(self, gpus: float = 0.0) -> int:
        """How many task workers the cluster holds at once (each takes TASK_THREADS CPUs and
        `gpus` GPUs); UserError when not one worker's GPUs are there (it would wait forever)."""
        from .executor import TASK_THREADS

        res = self.ray.cluster_resources()
        room = max(1, int(res.get("CPU", 1)) // TASK_THREADS)
        if gpus > 0:
            have = float(res.get("GPU", 0))
            if have < gpus:
                raise UserError(f"--gpus-per-worker {gpus:g}: the Ray cluster has {have:g} GPU(s)")
            room = min(room, int(have // gpus))
        return room

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


class RayRunner:
    """Ray actors for one `run_tasks` call: started on first use, kept across its waves (each
    actor loads the model once), closed at the end."""

    def __init__(self, store: TaskStore, loader, jobs: int, address: Optional[str] = None,
                 gpus_per_worker: float = 0.0):
        self.store, self.loader, self.jobs = store, loader, jobs
        self.address, self.gpus = address, float(gpus_per_worker)
        self.cluster: Optional[RayCluster] = None
        self.actors: list = []

    def _ensure(self, groups: int) -> None:
        if self.cluster is None:
            self.cluster = RayCluster(self.address)
        room = self.cluster.workers(self.gpus)  # more actors than fit would wait forever for CPUs / GPUs
        want = max(1, min(self.jobs if self.jobs > 1 else room, room, groups))
        if len(self.actors) < want:
            cls = _actor_class(self.cluster.ray, self.gpus)
            self.actors += [cls.remote(registry_snapshot(), str(self.store.root), self.loader, list(sys.path))
                            for _ in range(want - len(self.actors))]

    def run(self, groups: Sequence[list[Task]], finished: Callable, failed: Callable,
            done_elsewhere: Callable = lambda t: None) -> None:
        """Run the groups; report each member through `finished(task, meta, seconds)`,
        `failed(task, exc)` or `done_elsewhere(task)` (another build published it first)."""
        if not groups:
            return
        self._ensure(len(groups))
        ray = self.cluster.ray
        todo = list(enumerate(groups))
        running: dict = {}

        def submit(actor):
            if todo:
                i, group = todo.pop(0)
                running[actor.run.remote(i, group)] = (actor, i)

        for actor in self.actors:
            submit(actor)
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, i = running.pop(ref)
            try:
                _, outcomes = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a task error, or a worker that died for good
                cause = getattr(exc, "cause", None)
                for t in groups[i]:
                    failed(t, cause if isinstance(cause, BaseException) else exc)
            else:
                for t, outcome in zip(groups[i], outcomes):
                    if outcome is not None:
                        finished(t, *outcome)
                    else:
                        done_elsewhere(t)
            submit(actor)

    def close(self) -> None:
        if self.cluster is not None:
            for actor in self.actors:
                self.cluster.ray.kill(actor)
            self.actors = []
            self.cluster.close()
            self.cluster = None
