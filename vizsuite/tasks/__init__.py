"""Tasks: content-hashed definitions (pure data), a kind -> function registry, executors.

    @register_task("render_unit")
    def render_unit(task, ctx):            # module level: pool workers import it by name
        img = ...(ctx.model, task["layer"], task["unit"], seed=task["seed"])
        save_png(img, ctx.path("unit.png"))
        return {"value": 1.23}             # JSON metadata kept in done.json

    tasks = [make_task("render_unit", model=model_fingerprint(m), layer="blocks.4", unit=u, seed=0)
             for u in range(8)]
    report = run_tasks(tasks, site / ".cache/tasks", jobs=2, loader=ModelRef("efficientnet_lite0"))
"""

from .core import CACHE_VERSION, Task, canonical_json, content_hash, make_task, register_task, task_function
from .executor import BuildReport, ModelRef, TaskContext, TaskError, execute, run_tasks
from ..hashing import model_fingerprint
from .store import TaskResult, TaskStore

# every task kind is registered when vizsuite.tasks is imported (kinds import engines lazily)
from . import atlas, circuits, describe, effects, examples, features, graph, renders  # noqa: E402,F401  isort: skip

__all__ = ["BuildReport", "CACHE_VERSION", "ModelRef", "Task", "TaskContext", "TaskError", "TaskResult",
           "TaskStore", "canonical_json", "content_hash", "execute", "make_task", "model_fingerprint",
           "register_task", "run_tasks", "task_function"]
