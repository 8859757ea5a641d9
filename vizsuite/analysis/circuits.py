"""Circuit math: expanded weights between units of any two layers, and the classes a unit supports.

Expanded weights (Olah et al., "Visualizing Weights", Circuits thread) are the linear map from
channel i of layer L1 to channel j of layer L2 through everything in between, with the
nonlinearities replaced by identity (and max pools by average pools). With that replacement
the network from L1 to L2 is affine, so for any L1 value z:

    L2[j, y, x] = b + sum_i sum_(a,b) W[j, i, a, b] * z[i, y + a - r, x + b - r]

and W[j, i] is exactly the gradient of L2[j] at the centre position w.r.t. z[i] (one backward
gives all inputs i of a unit j), or, read the other way, the response of all of L2 to a unit
impulse on z[i] minus the response to the baseline (one forward gives all outputs j of a unit
i). We evaluate at a zero L1 (any point gives the same derivative of an affine map; zero keeps
multiplicative gates such as squeeze-excite, which are not affine, at a defined point).
The architecture does not matter: residuals, branches, depthwise convs, BN all come out of
autograd. Only activations written as bare functions (F.relu in a forward) stay nonlinear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from ..hooks import Hooks, replace
from ..units import Unit
from ..errors import UserError
from .linear import linearized


def _replace_output(model, layer, value_fn):
    """Writes `value_fn(original output)` as the layer's output (first call only)."""
    return Hooks(model, (), [replace(layer, value_fn)], stop_early=False)


def channel_indices(units) -> list[int]:
    """Channel indices of units (`units.Unit` of the channel basis, or ints): expanded weights
    are between channels; a feature of another basis is refused."""
    out = []
    for u in units:
        if isinstance(u, Unit):
            if not u.is_channel:
                raise UserError(f"expanded weights connect channels; {u} is a feature of basis {u.basis.name!r}")
            out.append(u.index)
        else:
            out.append(int(u))
    return out


def _probe(model, layer: str, size: int) -> torch.Size:
    x = torch.zeros(1, 3, size, size, device=model.mean.device)
    with torch.no_grad(), linearized(model), Hooks(model, [layer], detach=True) as cap:
        return cap(x)[layer].shape


def _l2_from_l1(model, l1: str, l2: str, z: torch.Tensor, size: int) -> torch.Tensor:
    """Run the linearized model with L1's output replaced by z (batch matches z); return L2."""
    x = torch.zeros(z.shape[0], 3, size, size, device=z.device)
    with linearized(model), Hooks(model, [l2], [replace(l1, lambda out: z)]) as cap:
        return cap(x)[l2]


def _support_box(mag: torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1) of the non-zero part of an H x W map (whole map if zero)."""
    nz = torch.nonzero(mag > mag.max() * 1e-7) if mag.max() > 0 else torch.empty(0, 2)
    if nz.numel() == 0:
        return 0, mag.shape[0] - 1, 0, mag.shape[1] - 1
    return int(nz[:, 0].min()), int(nz[:, 0].max()), int(nz[:, 1].min()), int(nz[:, 1].max())


def _centred_crop(maps: torch.Tensor, cy: int, cx: int) -> torch.Tensor:
    """Crop C x H x W maps to the square around (cy, cx) that holds all non-zero values."""
    y0, y1, x0, x1 = _support_box(maps.abs().sum(0))
    r = max(cy - y0, y1 - cy, cx - x0, x1 - cx, 0)
    h, w = maps.shape[1:]
    out = torch.zeros(maps.shape[0], 2 * r + 1, 2 * r + 1, dtype=maps.dtype)
    ys, xs = slice(max(cy - r, 0), min(cy + r + 1, h)), slice(max(cx - r, 0), min(cx + r + 1, w))
    out[:, ys.start - (cy - r):ys.stop - (cy - r), xs.start - (cx - r):xs.stop - (cx - r)] = maps[:, ys, xs]
    return out


@dataclass
class ExpandedWeights:
    """Kernels between one unit and every channel of the other layer.

    kernels: C x k x k (for `into`: input channel i -> the unit, correlation orientation like a
    conv weight; for `out_of`: the unit -> output channel j, as the output responds spatially).
    """

    kernels: torch.Tensor

    @property
    def norms(self) -> torch.Tensor:
        return self.kernels.flatten(1).norm(dim=1)

    @property
    def signed(self) -> torch.Tensor:
        """Norm carrying the sign of the kernel's sum (excitatory > 0, inhibitory < 0)."""
        s = torch.sign(self.kernels.flatten(1).sum(1))
        return self.norms * torch.where(s == 0, torch.ones_like(s), s)

    def top(self, n: int) -> list[tuple[int, float]]:
        """(channel, signed weight) of the n strongest connections by norm."""
        order = torch.argsort(self.norms, descending=True)[:n]
        return [(int(c), float(self.signed[c])) for c in order]


def expanded_weights_into(model, l1: str, l2: str, unit: int, *, size: Optional[int] = None) -> ExpandedWeights:
    """Expanded weights from every channel of l1 into channel `unit` of l2 (one backward)."""
    return expanded_weights_into_many(model, l1, l2, [unit], size=size)[0]


def expanded_weights_into_many(model, l1: str, l2: str, units: Sequence[int], *,
                               size: Optional[int] = None) -> list[ExpandedWeights]:
    """expanded_weights_into for several units of l2 at once: batch item k carries unit k's
    target, and batch items are independent, so one backward gives every unit's kernels."""
    size = size or model.input_size
    shape = _probe(model, l1, size)
    units = channel_indices(units)
    z = torch.zeros((len(units),) + tuple(shape[1:]), device=model.mean.device, requires_grad=True)
    with torch.enable_grad():
        out = _l2_from_l1(model, l1, l2, z, size)
        for u in units:
            if not 0 <= u < out.shape[1]:
                raise UserError(f"unit {u} out of range for layer {l2} ({out.shape[1]} channels)")
        rows = torch.arange(len(units), device=out.device)
        idx = torch.tensor(units, device=out.device)
        target = out[rows, idx, out.shape[2] // 2, out.shape[3] // 2] if out.dim() == 4 else out[rows, idx]
        if not target.requires_grad:
            raise UserError(f"layer {l2} does not depend on layer {l1}")
        (grad,) = torch.autograd.grad(target.sum(), z)
    grad = grad.detach().cpu()
    if grad.dim() == 2:
        return [ExpandedWeights(g.view(-1, 1, 1)) for g in grad]
    return [ExpandedWeights(_centred_crop(g, g.shape[1] // 2, g.shape[2] // 2)) for g in grad]


def expanded_weights_out_of(model, l1: str, unit: int, l2: str, *, size: Optional[int] = None) -> ExpandedWeights:
    """Expanded weights from channel `unit` of l1 to every channel of l2 (one forward, batch 2)."""
    return expanded_weights_out_of_many(model, l1, [unit], l2, size=size)[0]


@torch.no_grad()
def expanded_weights_out_of_many(model, l1: str, units: Sequence[int], l2: str, *,
                                 size: Optional[int] = None) -> list[ExpandedWeights]:
    """expanded_weights_out_of for several units of l1: one forward with a baseline plus one
    impulse per unit."""
    size = size or model.input_size
    shape = _probe(model, l1, size)
    units = channel_indices(units)
    z = torch.zeros((len(units) + 1,) + tuple(shape[1:]), device=model.mean.device)
    for k, u in enumerate(units, start=1):
        if not 0 <= u < shape[1]:
            raise UserError(f"unit {u} out of range for layer {l1} ({shape[1]} channels)")
        if len(shape) == 4:
            z[k, u, shape[2] // 2, shape[3] // 2] = 1.0
        else:
            z[k, u] = 1.0
    out = _l2_from_l1(model, l1, l2, z, size)
    resp = (out[1:] - out[:1]).cpu()
    if resp.dim() == 2:
        return [ExpandedWeights(r.view(-1, 1, 1)) for r in resp]
    return [ExpandedWeights(_centred_crop(r, r.shape[1] // 2, r.shape[2] // 2)) for r in resp]


def circuit(model, layers: Sequence[str], unit: int, fan: int = 3) -> tuple[list[list[tuple[str, int]]], list]:
    """A unit of layers[-1] and its strongest inputs, one level per earlier layer (fan each).

    Returns (levels, edges): levels[0] = [(layer, unit)], levels[d] = units of layers[-1-d];
    edges = [((src_layer, src_unit), (dst_layer, dst_unit), signed weight)].
    """
    layers = list(layers)
    levels = [[(layers[-1], channel_indices([unit])[0])]]
    edges = []
    for depth in range(1, len(layers)):
        src_layer, nxt = layers[-1 - depth], []
        for dst_layer, dst_unit in levels[-1]:
            for ch, w in expanded_weights_into(model, src_layer, dst_layer, dst_unit).top(fan):
                edges.append(((src_layer, ch), (dst_layer, dst_unit), w))
                if (src_layer, ch) not in nxt:
                    nxt.append((src_layer, ch))
        levels.append(nxt)
    return levels, edges


def class_support(model, layer: str, units: Sequence[int], *, images: Optional[torch.Tensor] = None,
                  top: int = 5) -> dict[int, list[tuple[int, float]]]:
    """{unit: [(class index, score)]}: the logits a unit's channel mean pushes up most.

    Score = d logit / d alpha where alpha is added to every position of the unit's channel:
    with `images`, the true network's directional derivative averaged over them (forward-mode
    AD, one pass per unit); without, through the linearized network from a zero layer
    ("expanded weights to the logits").
    """
    units = channel_indices(units)
    device = model.mean.device
    if images is None:
        size = model.input_size
        shape = _probe(model, layer, size)
        z = torch.zeros((len(units) + 1,) + tuple(shape[1:]), device=device)
        for i, u in enumerate(units):
            z[i + 1, u] = 1.0
        with torch.no_grad(), linearized(model), _replace_output(model, layer, lambda out: z):
            logits = model(torch.zeros(z.shape[0], 3, size, size, device=device))
        scores = (logits[1:] - logits[:1]).cpu()
    else:
        import torch.autograd.forward_ad as fwAD

        images = images.to(device)
        rows = []
        for u in units:
            with torch.no_grad(), fwAD.dual_level():
                def dual(out, u=u):
                    tangent = torch.zeros_like(out)
                    tangent[:, u] = 1.0
                    return fwAD.make_dual(out, tangent)

                with _replace_output(model, layer, dual):
                    logits = model(images)
                rows.append(fwAD.unpack_dual(logits).tangent.mean(0).cpu())
        scores = torch.stack(rows)
    out = {}
    for i, u in enumerate(units):
        vals, idx = scores[i].topk(min(top, scores.shape[1]))
        out[u] = [(int(c), float(v)) for v, c in zip(vals, idx)]
    return out


def weight_heatmap(kernel, px: int = 48, scale: Optional[float] = None) -> np.ndarray:
    """A k x k kernel as a uint8 px x px x 3 image: orange positive, blue negative, white zero.

    Pass a shared `scale` (max |w|) to make heatmaps of one unit's inputs comparable.
    """
    k = np.asarray(kernel.detach().cpu() if hasattr(kernel, "detach") else kernel, np.float32)
    k = k.reshape(k.shape[-2:]) if k.ndim > 2 else k.reshape(max(1, k.shape[0] if k.ndim else 1), -1)
    s = float(scale if scale else (np.abs(k).max() or 1.0))
    t = np.clip(k / s, -1, 1)[..., None]
    pos, neg, white = np.array([194, 65, 12]), np.array([29, 78, 216]), np.array([255, 255, 255])
    rgb = np.where(t >= 0, white + t * (pos - white), white + (-t) * (neg - white))
    rep = max(1, px // max(k.shape))
    img = np.repeat(np.repeat(rgb, rep, axis=0), rep, axis=1)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
