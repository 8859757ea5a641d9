"""The `model_graph` task kind: the model's meaningful-layer graph with receptive fields
(analysis.graph), for the gallery index; cached like every task (a rerun reuses it)."""

from __future__ import annotations

from .core import register_task
from .results import ModelGraph


@register_task("model_graph", result=ModelGraph)
def model_graph_task(task, ctx) -> ModelGraph:
    """Task kind `model_graph`: params `extra` (built layers to describe even when the graph does
    not show them) and `seed`."""
    from ..analysis.graph import model_graph

    return model_graph(ctx.model, extra=task.get("extra", []), seed=int(task.get("seed", 0)))
