"""A tiny CNN for gallery/atlas tests, loadable as `tests/models/tiny_gallery_model.py:spec`.

Its labels contain markup on purpose: every page must escape them.
"""

from collections import OrderedDict

import torch
from torch import nn

from vizsuite.zoo import ModelSpec

EVIL_LABEL = "<script>alert('label')</script>"


def build() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 6, 3, padding=1)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(6, 8, 3, padding=1, stride=2)), ("relu2", nn.ReLU()),
        ("conv3", nn.Conv2d(8, 8, 3, padding=1, stride=2)), ("relu3", nn.ReLU()),
        ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(8, 4)),
    ]))


def spec() -> ModelSpec:
    return ModelSpec(name="tiny", builder=build, input_size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                     labels=(EVIL_LABEL, "stripes", "dots", "plain"),
                     default_layers=("relu1", "relu2", "relu3"), description="tiny test CNN")
