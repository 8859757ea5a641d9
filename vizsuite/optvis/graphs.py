"""torch.fx helpers for render's rewrites of its private copy (`optvis.convs`, `optvis.prune`)."""

from __future__ import annotations

from torch import nn


def trace_children(module: nn.Module):
    """(graph, calls): `module`'s forward traced by torch.fx with every child a leaf (its insides
    are traced on their own), and how often it calls each child; None when it cannot be traced
    (data-dependent Python, unsupported ops: such a module is left as it is)."""
    import torch.fx as fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return True

    try:
        graph = _Tracer().trace(module)
    except Exception:
        return None
    calls: dict = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    return graph, calls


def unhooked(m: nn.Module) -> bool:
    """No forward hooks or pre-hooks: a hooked module must keep computing what its hooks read."""
    return not m._forward_hooks and not m._forward_pre_hooks


def named_ids(net: nn.Module, names) -> set:
    """The ids of the modules at these layer names (unknown names skipped)."""
    from ..hooks import resolve

    found = set()
    for name in names:
        try:
            found.add(id(resolve(net, name)))
        except Exception:
            continue
    return found
