"""Expanded weights against ground truth on linear models; class support; heatmaps."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vizsuite.analysis import circuits as C
from vizsuite.zoo.spec import ModelSpec, VisionModel


def linear_net() -> VisionModel:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(inplace=True),
                        nn.Conv2d(5, 3, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 6))
    spec = ModelSpec("lin", builder=lambda: net, input_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    model = VisionModel(net, spec).eval()
    model.requires_grad_(False)
    return model


def composed(w_a: np.ndarray, w_b: np.ndarray) -> np.ndarray:
    """Kernel of conv b after conv a (cross-correlation, stride 1): K[j,i] = sum_m w_b[j,m] (*) w_a[m,i]."""
    out_c, mid, kb, _ = w_b.shape
    _, in_c, ka, _ = w_a.shape
    k = np.zeros((out_c, in_c, ka + kb - 1, ka + kb - 1))
    for u in range(kb):
        for v in range(kb):
            for p in range(ka):
                for q in range(ka):
                    k[:, :, u + p, v + q] += np.einsum("jm,mi->ji", w_b[:, :, u, v], w_a[:, :, p, q])
    return k


def test_expanded_weights_equal_composed_kernel():
    model = linear_net()
    net = model.net
    truth = composed(net[2].weight.numpy(), net[4].weight.numpy())  # 3 x 4 x 5 x 5, from '0' to '4'
    for j in range(3):
        ew = C.expanded_weights_into(model, "0", "4", j)
        assert ew.kernels.shape == (4, 5, 5)
        np.testing.assert_allclose(ew.kernels.numpy(), truth[j], rtol=1e-4, atol=1e-5)
    for i in range(4):  # the other direction: a forward impulse response, spatially flipped
        out = C.expanded_weights_out_of(model, "0", i, "4")
        np.testing.assert_allclose(out.kernels.numpy(), truth[:, i, ::-1, ::-1], rtol=1e-4, atol=1e-5)
    # adjacent layers: the expanded weight is the conv weight itself
    np.testing.assert_allclose(C.expanded_weights_into(model, "1", "2", 2).kernels.numpy(),
                               net[2].weight[2].numpy(), rtol=1e-5, atol=1e-6)
    ew = C.expanded_weights_into(model, "0", "4", 1)
    norms = np.sqrt((truth[1] ** 2).sum(axis=(1, 2)))
    assert [c for c, _ in ew.top(4)] == list(np.argsort(-norms))
    assert all(np.sign(w) == np.sign(truth[1, c].sum()) for c, w in ew.top(4))
    assert all("forward" not in vars(m) for m in net.modules())


def test_circuit_levels_and_edges():
    model = linear_net()
    levels, edges = C.circuit(model, ["0", "2", "4"], unit=1, fan=2)
    assert levels[0] == [("4", 1)] and len(levels[1]) == 2 and 2 <= len(levels[2]) <= 4
    assert len(edges) == 2 + 2 * 2
    assert all(src[0] in ("0", "2") and dst[0] in ("2", "4") for src, dst, _ in edges)


def test_class_support_matches_linear_head():
    model = linear_net()
    head = model.net[7].weight  # 6 x 3: after '4' the model is avg pool + linear
    for images in (None, torch.rand(2, 3, 16, 16)):
        got = C.class_support(model, "4", [0, 2], images=images, top=6)
        for u in (0, 2):
            order = torch.argsort(head[:, u], descending=True).tolist()
            assert [c for c, _ in got[u]] == order
            np.testing.assert_allclose([s for _, s in got[u]], head[order, u].numpy(), rtol=1e-4, atol=1e-5)


def test_weight_heatmap():
    img = C.weight_heatmap(torch.tensor([[1.0, 0.0], [-1.0, 0.5]]), px=40)
    assert img.shape == (40, 40, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (194, 65, 12) and tuple(img[0, 39]) == (255, 255, 255)
    assert tuple(img[39, 0]) == (29, 78, 216)


def test_batched_expanded_weights_equal_ground_truth_per_unit():
    model = linear_net()
    net = model.net
    truth = composed(net[2].weight.numpy(), net[4].weight.numpy())
    into = C.expanded_weights_into_many(model, "0", "4", [2, 0, 1])
    for j, ew in zip([2, 0, 1], into):
        np.testing.assert_allclose(ew.kernels.numpy(), truth[j], rtol=1e-4, atol=1e-5)
    out = C.expanded_weights_out_of_many(model, "0", [3, 1], "4")
    for i, ew in zip([3, 1], out):
        np.testing.assert_allclose(ew.kernels.numpy(), truth[:, i, ::-1, ::-1], rtol=1e-4, atol=1e-5)
