"""A tiny model with ground truths by construction, loadable as `tests/models/copy_unit_model.py:spec`.

Layer `relu` has 4 channels: channel 0 is USED (class 0's logit reads only its spatial mean, with
weight W_USED), channel 1 is an exact COPY of channel 0 (same filter and bias: identical
activations on every input) that feeds nothing, channels 2 and 3 feed classes 1 and 2.
Everything after `relu` is linear, so first-order estimates are exact too.
"""

import torch
from torch import nn

from vizsuite.zoo import ModelSpec

W_USED = 2.5
USED, COPY = 0, 1


class CopyUnit(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(4, 3, 3, 3, generator=g))
            self.conv.bias.copy_(torch.randn(4, generator=g) * 0.1)
            self.conv.weight[COPY] = self.conv.weight[USED]
            self.conv.bias[COPY] = self.conv.bias[USED]
            self.head.weight.zero_()
            self.head.weight[0, USED] = W_USED
            self.head.weight[1, 2] = 1.0
            self.head.weight[2, 3] = -1.5
            self.head.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))

    def forward(self, x):
        return self.head(self.relu(self.conv(x)).mean((2, 3)))


def build() -> nn.Module:
    return CopyUnit()


def spec() -> ModelSpec:
    return ModelSpec(name="copy_unit", builder=build, input_size=16, crop_pct=1.0, mean=(0.5,) * 3, std=(0.5,) * 3,
                     labels=("uses-unit-0", "uses-unit-2", "uses-unit-3"), default_layers=("relu",),
                     description="used unit + exact unused copy")
