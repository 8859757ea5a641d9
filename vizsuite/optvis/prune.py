"""Branches no objective reads, skipped in render's private copy (docs/optvis.md, "Speed").

An Inception block joins its branches with a channel concatenation (`zoo.inceptionv1.Concat`).
When that join is the one layer an objective reads, and the objective reads only some of its
channels (unit objectives: `channel("mixed4a", 3)`, or a batch of them), the branches holding
none of those channels cannot change the loss or its gradient: their values never reach it.
Render then skips them: each module that only feeds such a branch returns zeros of its output's
shape, with no gradient (`Skippable`). A gallery renders a layer's units in batches of
consecutive channels, so most batches live in one branch: for InceptionV1's mixed4a that skips
three of its four branches, forward and backward.

`mark_branches` wraps the joins and the modules that feed one branch alone, found by tracing
each module's forward with torch.fx (render's copy, once). `Unread` decides per render call,
after its first step: that step runs in full and records the branch widths and output shapes.
Objective values and gradients are those of the full network (exact zeros are added where the
skipped branches' gradients would have been exact zeros).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..hooks import resolve
from ..zoo.inceptionv1 import Concat
from .graphs import named_ids, trace_children, unhooked
from .objectives import Objective


class Skippable(nn.Module):
    """Stands where a module was that feeds one branch of a `Join` alone. `skip` False: that
    module. `skip` True: zeros of the output shape the module gave for this input shape (learnt
    in an unskipped call; an input shape not seen yet runs the module), no gradient."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.skip = False
        self._shapes: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype, x.device)
        if self.skip and key in self._shapes:
            shape, dtype, cl = self._shapes[key]
            return torch.empty(shape, dtype=dtype, device=x.device,
                               memory_format=torch.channels_last if cl else torch.contiguous_format).zero_()
        y = self.module(x)
        if isinstance(y, torch.Tensor):
            self._shapes[key] = (tuple(y.shape), y.dtype, y.dim() == 4 and not y.is_contiguous()
                                 and y.is_contiguous(memory_format=torch.channels_last))
        return y


class Join(nn.Module):
    """Stands where a channel concatenation was; `branches[i]`: the `Skippable` modules that feed
    its i-th input alone. Records the inputs' channel widths on each call."""

    def __init__(self, concat: nn.Module, branches: list[list[Skippable]]):
        super().__init__()
        self.concat = concat
        self.branches = branches          # plain lists: the modules stay registered where they are
        self.widths: Optional[list[int]] = None

    def forward(self, tensors):
        self.widths = [int(t.shape[1]) for t in tensors]
        return self.concat(tensors)


def _exclusive(node, calls: dict) -> list:
    """The call_module nodes whose outputs reach only `node` (itself included), walking back."""
    found = {node}
    frontier = [node]
    while frontier:
        n = frontier.pop()
        for m in n.all_input_nodes:
            if m in found or m.op != "call_module" or calls.get(m.target) != 1:
                continue
            if all(u in found for u in m.users):
                found.add(m)
                frontier.append(m)
    return [n for n in found if n.op == "call_module" and calls.get(n.target) == 1]


def mark_branches(net: nn.Module, keep=()) -> int:
    """In place (render's copy): every `Concat` fed a list of branches in its parent's traced
    forward becomes a `Join`, and each module that feeds one branch alone a `Skippable` (hooked
    modules and those named in `keep` excepted). Returns the number of joins."""
    import torch.fx as fx

    protected = named_ids(net, keep)
    joins = 0
    for parent in list(net.modules()):
        children = dict(parent.named_children())
        if not any(type(c) is Concat for c in children.values()):
            continue
        traced = trace_children(parent)
        if traced is None:
            continue
        graph, calls = traced
        for node in graph.nodes:
            if (node.op != "call_module" or type(children.get(node.target)) is not Concat
                    or calls[node.target] != 1 or len(node.args) != 1 or not isinstance(node.args[0], (list, tuple))):
                continue
            branches = []
            for b in node.args[0]:
                mods = []
                if isinstance(b, fx.Node):
                    for n in _exclusive(b, calls):
                        m = children.get(n.target)
                        if m is None or not unhooked(m) or id(m) in protected:
                            continue
                        if not isinstance(m, Skippable):
                            m = Skippable(m)
                            setattr(parent, n.target, m)
                            children[n.target] = m
                        mods.append(m)
                branches.append(mods)
            setattr(parent, node.target, Join(children[node.target], branches))
            joins += 1
    return joins


def channels_read(objective: Objective, layer: str) -> Optional[set]:
    """The channels of `layer` the objective reads, when it reads channel units of that layer
    only (`channel`, `unit("L:K")`, per-image batches of them), else None (all)."""
    parts = getattr(objective, "parts", None) or [objective]
    found = set()
    for p in parts:
        u = getattr(p, "unit", None)
        if u is None or u.layer != layer or not u.is_channel:
            return None
        found.add(int(u.index))
    return found


class Unread:
    """Context manager for one render call: `arm()` (after a full step) skips the branches of the
    objective's one layer that hold none of the channels it reads; exit turns them back on."""

    def __init__(self, net: nn.Module, objective: Objective):
        self.net = net
        self.objective = objective
        self.skipped: list[Skippable] = []
        self.armed = False

    def __enter__(self):
        return self

    def arm(self) -> int:
        """Skip what can be skipped now; returns the number of modules skipped."""
        if self.armed:
            return len(self.skipped)
        self.armed = True
        obj = self.objective
        if obj.needs_logits or len(obj.layers) != 1:
            return 0       # another layer (or the logits) may read the join's other channels
        (layer,) = obj.layers
        try:
            join = resolve(self.net, layer)
        except Exception:
            return 0
        wanted = channels_read(obj, layer)
        if not isinstance(join, Join) or wanted is None or join.widths is None:
            return 0
        start = 0
        for width, mods in zip(join.widths, join.branches):
            if not any(start <= c < start + width for c in wanted):
                for m in mods:
                    m.skip = True
                    self.skipped.append(m)
            start += width
        return len(self.skipped)

    def __exit__(self, *exc):
        for m in self.skipped:
            m.skip = False
        self.skipped = []
