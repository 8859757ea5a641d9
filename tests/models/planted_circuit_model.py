"""A two-layer model with a planted circuit, loadable as `tests/models/planted_circuit_model.py:spec`.

Layer `a` (ReLU of a 3x3 conv): a:1 is an exact copy of a:0 (same filter and bias). Layer `b`
(ReLU of a 1x1 conv over `a`): b:0 = relu(2 a:0 + 0.5 a:2) uses a:0 and NOT its copy a:1;
b:1 is an exact copy of b:0 that feeds nothing; b:2 = relu(a:2 - 0.3 a:0). The head reads the
spatial means of `b` linearly: class 0 = 3 b:0, class 1 = b:2, class 2 = 0.
"""

import torch
from torch import nn

from vizsuite.zoo import ModelSpec


class PlantedCircuit(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.a = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.b = nn.ReLU()
        self.head = nn.Linear(3, 3)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.randn(3, 3, 3, 3, generator=g))
            self.conv1.bias.copy_(torch.rand(3, generator=g) * 0.2)
            self.conv1.weight[1] = self.conv1.weight[0]
            self.conv1.bias[1] = self.conv1.bias[0]
            w = torch.zeros(3, 3, 1, 1)
            w[0, 0], w[0, 2] = 2.0, 0.5
            w[1] = w[0]
            w[2, 2], w[2, 0] = 1.0, -0.3
            self.conv2.weight.copy_(w)
            self.conv2.bias.zero_()
            self.head.weight.zero_()
            self.head.weight[0, 0] = 3.0
            self.head.weight[1, 2] = 1.0
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(self.b(self.conv2(self.a(self.conv1(x)))).mean((2, 3)))


def spec() -> ModelSpec:
    return ModelSpec(name="planted_circuit", builder=PlantedCircuit, input_size=16, crop_pct=1.0, mean=(0.5,) * 3,
                     std=(0.5,) * 3, labels=("reads-b0", "reads-b2", "constant"), default_layers=("a", "b"),
                     description="planted circuit with exact copies")
