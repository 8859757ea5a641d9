"""Small models and snapshots shared by the attribution tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vizsuite.zoo.spec import ModelSpec, VisionModel


def wrap(net: nn.Module, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), classes: int = 4) -> VisionModel:
    """A VisionModel around a test network (non-trivial normalization, so spaces are exercised)."""
    spec = ModelSpec(name="tiny", builder=lambda: net, mean=tuple(mean), std=tuple(std), input_size=32,
                     labels=tuple(f"class {i}" for i in range(classes)))
    model = VisionModel(net, spec).eval()
    model.requires_grad_(False)
    return model


def relu_net(seed: int = 0, bias: bool = True) -> nn.Module:
    """conv-relu-maxpool-conv-relu-avgpool-linear, with biases: the LRP-0 = gradient x input case."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=bias), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 4, bias=bias))


def bn_net(seed: int = 0, zero_shift: bool = True) -> nn.Module:
    """Bias-free convs each followed by BatchNorm with random scale and variance.

    With zero_shift the batch norms have running_mean = 0 and bias = 0, so the canonized network
    (BN merged into the convs) is bias-free and LRP must conserve relevance exactly.
    """
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4, bias=False))
    randomize_bn(net, zero_shift=zero_shift)
    return net.eval()


def randomize_bn(net: nn.Module, zero_shift: bool = False, seed: int = 1) -> None:
    """Give every batch norm non-trivial statistics (random-weight models have identity BNs)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            n = m.num_features
            with torch.no_grad():
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                if zero_shift:
                    m.running_mean.zero_()
                    m.bias.zero_()
                else:
                    m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                    m.bias.copy_(0.1 * torch.randn(n, generator=g))


class RegionNet(nn.Module):
    """Only pixels in rows/cols [lo, hi) can change the output (the input is masked first)."""

    def __init__(self, size: int = 32, lo: int = 10, hi: int = 22, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        mask = torch.zeros(1, 1, size, size)
        mask[..., lo:hi, lo:hi] = 1.0
        self.register_buffer("mask", mask)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = x * self.mask
        return self.fc(self.flat(self.pool(self.relu2(self.conv2(self.relu1(self.conv1(x)))))))


def snapshot(net: nn.Module) -> dict:
    """Everything a canonizer or hook could leave behind, per module."""
    snap = {}
    for name, m in net.named_modules():
        snap[name] = {
            "type": type(m),
            "dict": sorted(k for k in m.__dict__ if not k.startswith("_")),
            "modules": sorted(m._modules),
            "params": {k: (None if v is None else v.detach().clone()) for k, v in m._parameters.items()},
            "buffers": {k: (None if v is None else v.detach().clone()) for k, v in m._buffers.items()},
            "hooks": (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                      len(getattr(m, "_backward_pre_hooks", {}))),
            "eps": getattr(m, "eps", None),
            "forward_in_dict": "forward" in m.__dict__,
        }
    return snap


def assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys(), set(before) ^ set(after)
    for name in before:
        b, a = before[name], after[name]
        for key in ("type", "dict", "modules", "hooks", "eps", "forward_in_dict"):
            assert b[key] == a[key], (name, key, b[key], a[key])
        for group in ("params", "buffers"):
            assert b[group].keys() == a[group].keys(), (name, group)
            for k in b[group]:
                if b[group][k] is None or a[group][k] is None:
                    assert b[group][k] is None and a[group][k] is None, (name, k)
                else:
                    assert torch.equal(b[group][k], a[group][k]), (name, k)


def region_fraction(attr: torch.Tensor, lo: int, hi: int) -> float:
    a = attr.detach().abs().sum(1)[0].double()
    return float(a[lo:hi, lo:hi].sum() / a.sum().clamp_min(1e-30))


def chelsea(size: int = 224) -> torch.Tensor:
    from PIL import Image
    from skimage import data

    from vizsuite.images import resize_center_crop, to_array

    img = resize_center_crop(Image.fromarray(np.asarray(data.chelsea())), size)
    return torch.from_numpy(to_array(img)).permute(2, 0, 1)[None].contiguous()
