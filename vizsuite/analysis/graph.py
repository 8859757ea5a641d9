"""The model as a graph of its meaningful layers, traced from one forward pass (docs/gallery.md).

Meaningful layers are the modules a reader thinks in: block outputs (a `Sequential`/`ModuleList`
is opened into its children, anything else is one block), the stem and the head, Inception's
mixed (concatenation) layers. Placeholders (Identity, dropout, flatten) are dropped, and a layer
feeding only a pointwise activation/normalization collapses into it (conv -> ReLU is one node,
named by the ReLU whose output the gallery shows).

The trace is autograd's: one forward on an input that requires grad, every module's output read
through `Hooks`; walking each output's `grad_fn` back to the nearest other module output gives
which layer feeds which, and the op where paths meet gives the merge (`torch.cat` -> concat,
`+` -> add). Layers every input-to-output path passes through are the trunk (`kind="layer"`);
the others feeding a merge are its branches (`kind="branch"`, e.g. Inception's 1x1/3x3/5x5/pool
towers); a merge whose inputs are the layer's own body and an earlier trunk layer is a residual
(`kind="skip"` edge). A model the trace cannot follow degrades to a chain (`traced=False`).

The dataclasses are torch-free (task results and page data reuse them); `model_graph` imports
torch when called.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

#: module types that only pass data along (dropped from the graph)
PLACEHOLDERS = re.compile(r"^(Identity|Dropout\w*|AlphaDropout|DropPath|DropBlock\w*|Flatten|Unflatten)$")
#: pointwise modules a preceding layer collapses into (same shape, one input)
POINTWISE = re.compile(r"ReLU|ReLU6|SiLU|GELU|Sigmoid|Tanh|Hardswish|Hardsigmoid|Swish|Mish|ELU|"
                       r"BatchNorm|GroupNorm|LayerNorm|InstanceNorm|NormAct|Act\d*d?$")
_MERGES = (("Cat", "concat"), ("Stack", "concat"), ("Add", "add"), ("Sub", "add"), ("Mul", "mul"))


@dataclass
class GraphNode:
    """One node: a trunk layer (`kind="layer"`) or a branch feeding a merge (`kind="branch"`).
    `merge`: how the layer's output combines several inputs (concat / add / mul), else None.
    `receptive_field`: pixels per side, composed from the kernels, strides and dilations on the
    paths from the input (the widest path at a merge); None when unknown; `whole`: the layer
    sees the whole image (after a global pool). `clipped`: at least that many pixels."""

    name: str
    type: str
    shape: tuple[int, ...] = ()
    channels: int = 0
    kind: str = "layer"
    merge: Optional[str] = None
    receptive_field: Optional[int] = None
    clipped: bool = False
    whole: bool = False


@dataclass
class GraphEdge:
    """`src` feeds `dst` ("input" is the image). kind: "flow" (data path), "skip" (a residual's
    identity path around `dst`'s body, added at `dst`)."""

    src: str
    dst: str
    kind: str = "flow"


@dataclass
class ModelGraph:
    nodes: list[GraphNode] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)
    traced: bool = True  # False: the trace failed, nodes are the layers in execution order

    def layers(self) -> list[GraphNode]:
        return [n for n in self.nodes if n.kind == "layer"]

    def node(self, name: str) -> Optional[GraphNode]:
        return next((n for n in self.nodes if n.name == name), None)


def candidate_layers(net) -> list[str]:
    """Module names a graph is drawn over: children of the net, containers opened."""
    from torch import nn

    out: list[str] = []

    def visit(prefix: str, module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) and len(child):
                visit(full, child)
            else:
                out.append(full)

    visit("", net)
    return out


def model_graph(model, *, input_size: Optional[int] = None, extra: Sequence[str] = (), seed: int = 0) -> ModelGraph:
    """The meaningful-layer graph of a `VisionModel`, with each layer's receptive field composed
    from the traced convolutions and pools. `extra`: layers to describe too when the graph does
    not show them (e.g. a stage container a gallery builds), as `kind="extra"` nodes."""
    try:
        graph = _traced_graph(model, input_size or model.input_size, seed, list(extra))
    except Exception:  # noqa: BLE001 - any model the trace cannot follow still gets its layers, as a chain
        graph = None
    return graph if graph is not None else _chain_graph(model, input_size)


def _chain_graph(model, input_size) -> ModelGraph:
    from ..capture import list_layers

    names = set(candidate_layers(model.net))
    infos = [i for i in list_layers(model, input_size) if i.name in names and not PLACEHOLDERS.match(i.type)]
    nodes = [GraphNode(i.name, i.type, tuple(i.shape), i.channels) for i in infos]
    edges = [GraphEdge(a.name, b.name) for a, b in zip([GraphNode("input", "")] + nodes, nodes)]
    return ModelGraph(nodes, edges, traced=False)


def _traced_graph(model, size: int, seed: int, extra: list[str]) -> Optional[ModelGraph]:
    import torch

    from ..hooks import Hooks

    net = model.net
    modules = dict(net.named_modules())
    all_names = [n for n in modules if n]
    cands = candidate_layers(net)
    gen = torch.Generator().manual_seed(seed)
    device = next((b.device for b in model.buffers()), torch.device("cpu"))
    x = torch.rand(1, 3, size, size, generator=gen).to(device).requires_grad_(True)
    with torch.enable_grad(), Hooks(model, all_names, stop_early=False, detach=False, strict=False) as h:
        acts = h(x)
        out = h.output
    if out is None or getattr(out, "grad_fn", None) is None:
        return None
    order = {name: i for i, name in enumerate(acts)}  # first calls, in execution order
    fns = {name: v.grad_fn for name, v in acts.items() if isinstance(v, torch.Tensor) and v.grad_fn is not None}

    # trunk candidates: ran, produced a graph node, not a placeholder; an output shared with a
    # later candidate (in-place module, a module returning its input) belongs to the later one
    cand = sorted((c for c in cands if c in fns and not PLACEHOLDERS.match(type(modules[c]).__name__)),
                  key=order.get)
    owner: dict = {}
    for c in cand:
        owner[fns[c]] = c
    cand = [c for c in cand if owner[fns[c]] == c]
    anywhere: dict = {}  # every module's output node -> its name (candidates win)
    for name in sorted(fns, key=order.get):
        anywhere.setdefault(fns[name], name)
    anywhere.update(owner)

    def nearest(start: list, stops: dict) -> list[str]:
        """Names of the first `stops` nodes (or "input") reached walking back from `start`."""
        hit = _walk(start, lambda n: [m for m, _ in n.next_functions if m is not None],
                    lambda n: n in stops or type(n).__name__ == "AccumulateGrad")
        found = [stops[n] if n in stops else "input" for n in hit if n in stops or n.variable is x]
        return sorted(set(found), key=lambda s: order.get(s, -1))

    srcs = {c: nearest([m for m, _ in fns[c].next_functions if m is not None], owner) for c in cand}
    sinks = nearest([out.grad_fn], owner)
    if not sinks or not any("input" in s for s in srcs.values()):
        return None  # the trace lost the input (detached inside, no autograd): no graph to draw

    # trunk: candidates every input -> output path passes through
    consumers: dict[str, list[str]] = {}
    for c, ss in srcs.items():
        for s in ss:
            consumers.setdefault(s, []).append(c)

    def reaches_output(without: str) -> bool:
        seen, stack = set(), ["input"]
        while stack:
            n = stack.pop()
            if n in seen or n == without:
                continue
            seen.add(n)
            if n in sinks:
                return True
            stack.extend(consumers.get(n, []))
        return False

    trunk = [c for c in cand if not reaches_output(c)]
    if not trunk:
        return None
    trunk_set = set(trunk)
    # a trunk layer whose only consumer is a pointwise trunk layer fed by it alone collapses into it
    collapsed: set[str] = set()
    for a, b in zip(trunk, trunk[1:]):
        if srcs[b] == [a] and consumers.get(a) == [b] and POINTWISE.search(type(modules[b]).__name__) \
                and tuple(acts[a].shape) == tuple(acts[b].shape):
            collapsed.add(a)
    shown = [c for c in trunk if c not in collapsed]
    shown_set = set(shown)

    def trunk_sources(name: str) -> list[str]:
        """Nearest shown trunk layers (or "input") upstream of candidate `name`."""
        found = _walk(srcs.get(name, []), lambda s: srcs.get(s, []), lambda s: s == "input" or s in shown_set)
        return sorted(set(found), key=lambda s: order.get(s, -1))

    nodes: dict[str, GraphNode] = {}
    edges: list[GraphEdge] = []

    def add_node(name: str, kind: str) -> None:
        if name not in nodes:
            shape = tuple(int(d) for d in acts[name].shape[1:])
            nodes[name] = GraphNode(name, type(modules[name]).__name__, shape, shape[0] if shape else 1, kind)

    for t in shown:
        add_node(t, "layer")
        # what feeds this layer directly (collapsed layers looked through): trunk layers, the
        # input, or branches (candidates off the trunk, e.g. Inception's towers)
        direct = _walk(srcs[t], lambda s: srcs.get(s, []), lambda s: s not in collapsed)
        branches = sorted({s for s in direct if s != "input" and s not in trunk_set}, key=order.get)
        beside = [s for s in direct if s == "input" or s in shown_set]
        for b in branches:
            add_node(b, "branch")
            for s in trunk_sources(b):
                edges.append(GraphEdge(s, b))
            edges.append(GraphEdge(b, t))
        if not branches:
            edges.extend(GraphEdge(s, t) for s in trunk_sources(t))
        else:
            edges.extend(GraphEdge(s, t, "skip") for s in beside)  # a trunk layer merged in beside the branches
        merge, parts = _merge(fns[t], anywhere, nearest, x)
        if merge and len(parts) >= 2:
            nodes[t].merge = merge
            inside = [p for p in parts if p.startswith(t + ".")]
            outside = [p for p in parts if p == "input" or p in shown_set]
            if inside and outside and not branches:  # a residual block: its body plus an identity path
                edges.extend(GraphEdge(s, t, "skip") for s in outside)
        elif len(branches) + len(beside) >= 2:
            nodes[t].merge = "merge"
    for name in extra:
        if name not in nodes and name in fns and name in modules:
            add_node(name, "extra")
    fields = _fields(x, [fns[n] for n in nodes])
    for n in nodes.values():
        f = fields.get(fns[n.name])
        if f is not None and len(n.shape) == 3:
            n.receptive_field, n.whole = (None, True) if f[0] is None else (int(f[0]), False)
        elif f is not None and f[0] is None or len(n.shape) != 3:
            n.whole = f is not None
    ordered = sorted(nodes.values(), key=lambda n: order[n.name])
    return ModelGraph(ordered, [GraphEdge(*k) for k in dict.fromkeys((e.src, e.dst, e.kind) for e in edges)])


def _walk(start, expand, stop) -> list:
    """Depth-first from `start`, each item once: the items where `stop` holds are collected
    (and not gone past), the others expanded into `expand(item)`."""
    found, seen, stack = [], set(), list(start)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if stop(n):
            found.append(n)
        else:
            stack.extend(expand(n))
    return found


def _merge(fn, anywhere: dict, nearest, x) -> tuple[Optional[str], list[str]]:
    """Walk back from a layer's output through one-input ops to the first op with several
    inputs; (its kind, the module outputs feeding each of its inputs) or (None, [])."""
    n = fn
    for _ in range(64):
        ins = [m for m, _ in n.next_functions if m is not None
               and not (type(m).__name__ == "AccumulateGrad" and m.variable is not x)]  # parameters
        if len(ins) >= 2:
            kind = next((k for prefix, k in _MERGES if type(n).__name__.startswith(prefix)), None)
            if kind is None:
                return None, []
            parts: list[str] = []
            for m in ins:
                parts.extend(nearest([m], anywhere))
            return kind, list(dict.fromkeys(parts))
        if not ins or ins[0] in anywhere:  # reached another module's output: nothing merges here
            return None, []
        n = ins[0]
    return None, []


def _fields(x, targets: list) -> dict:
    """{autograd node: (receptive-field side or None for the whole image, jump)} for `targets`,
    composed from the input: a convolution or pool of kernel k, stride s, dilation d turns
    (r, j) into (r + (k - 1) * d * j, j * s); a merge takes its widest input; adaptive and
    global pools see the whole image. Iterative (deep graphs), memoised."""
    memo: dict = {}
    stack = [(t, False) for t in targets]
    while stack:
        n, ready = stack.pop()
        if n in memo:
            continue
        ins = [m for m, _ in n.next_functions if m is not None]
        if type(n).__name__ == "AccumulateGrad":
            memo[n] = (1, 1) if n.variable is x else False
            continue
        if not ready:
            stack.append((n, True))
            stack.extend((m, False) for m in ins if m not in memo)
            continue
        got = [memo[m] for m in ins if memo.get(m)]
        if not got:
            memo[n] = False
            continue
        whole = any(g[0] is None for g in got)
        r = None if whole else max(g[0] for g in got)
        j = max(g[1] for g in got)
        name = type(n).__name__
        if name.startswith("Adaptive") or name.startswith("Mean") and "Pool" not in name:
            memo[n] = (None, j)
            continue
        k = s = d = None
        if name.startswith("Convolution") and not getattr(n, "_saved_transposed", False):
            k = tuple(n._saved_weight.shape[2:])
            s, d = tuple(n._saved_stride), tuple(n._saved_dilation)
        elif "Pool" in name and hasattr(n, "_saved_kernel_size"):
            k = tuple(n._saved_kernel_size)
            s = tuple(n._saved_stride) or k
            d = tuple(getattr(n, "_saved_dilation", ()) or (1,) * len(k))
        if k and r is not None:
            r = r + (max(k) - 1) * max(d) * j
            j = j * max(s)
        memo[n] = (r, j)
    return {t: memo[t] for t in targets if memo.get(t)}
