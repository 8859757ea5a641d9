"""The `model_graph` task kind: the model's meaningful-layer graph with measured receptive
fields (analysis.graph), for the gallery index; cached like every task (a rerun reuses it)."""

from __future__ import annotations

from .core import register_task
from .results import ModelGraph


@register_task("model_graph", result=ModelGraph)
def model_graph_task(task, ctx) -> ModelGraph:
    """Task kind `model_graph`: params `extra` (layers to measure receptive fields of too)."""
    from ..analysis.graph import GraphNode, model_graph
    from ..analysis.receptive import receptive_fields

    graph = model_graph(ctx.model, seed=int(task.get("seed", 0)))
    extra = [name for name in task.get("extra", []) if graph.node(name) is None]
    if extra:  # built layers the graph does not show (inside a block): their fields for the table
        from ..capture import list_layers

        info = {i.name: i for i in list_layers(ctx.model)}
        rfs = receptive_fields(ctx.model, extra)
        for name in extra:
            i, rf = info[name], rfs[name]
            graph.nodes.append(GraphNode(name, i.type, tuple(i.shape), i.channels, kind="extra",
                                         receptive_field=int(rf.size) if rf.spatial else None,
                                         clipped=bool(rf.clipped)))
    return graph
