"""The meaningful-layer graph (analysis.graph): residual adds in efficientnet_lite0, Inception
concat branches, chain fallback for untraceable models; receptive fields by construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vizsuite.analysis.graph import model_graph
from vizsuite.zoo import ModelSpec, load_model

from .conftest import ROOT

TINY = str(ROOT / "tests" / "models" / "tiny_gallery_model.py") + ":spec"


def test_tiny_chain_and_receptive_fields():
    g = model_graph(load_model(TINY))
    assert g.traced
    # conv -> ReLU pairs collapse into the ReLU, Flatten (a placeholder) is dropped
    assert [n.name for n in g.layers()] == ["relu1", "relu2", "relu3", "pool", "fc"]
    assert [(e.src, e.dst) for e in g.edges] == [("input", "relu1"), ("relu1", "relu2"), ("relu2", "relu3"),
                                                 ("relu3", "pool"), ("pool", "fc")]
    rf = {n.name: n.receptive_field for n in g.layers()}
    # 3x3 conv: 3; another 3x3 stride 2: 3 + 2 = 5; a third 3x3 after the stride: 5 + 2 * 2 = 9
    assert (rf["relu1"], rf["relu2"], rf["relu3"]) == (3, 5, 9)
    assert rf["fc"] is None and g.node("fc").whole and g.node("pool").whole  # after the global pool
    from vizsuite.analysis.receptive import receptive_fields

    measured = receptive_fields(load_model(TINY), ["relu1", "relu2", "relu3"])  # gradients, not composition
    assert {k: v.size for k, v in measured.items()} == {k: rf[k] for k in measured}


def test_efficientnet_residual_adds_visible(effnet):
    g = model_graph(effnet, input_size=64)
    names = [n.name for n in g.layers()]
    assert names[0] == "bn1" and names[-1] == "classifier" and "blocks.3.1" in names and "blocks.6.0" in names
    assert not [n for n in g.nodes if n.type in ("Identity", "Dropout", "Flatten")]
    merges = {n.name: n.merge for n in g.layers() if n.merge}
    # the first block of each stage changes shape (no skip); the others add their input back
    assert set(merges) == {"blocks.1.1", "blocks.2.1", "blocks.3.1", "blocks.3.2", "blocks.4.1", "blocks.4.2",
                           "blocks.5.1", "blocks.5.2", "blocks.5.3"} and set(merges.values()) == {"add"}
    rf = {n.name: n.receptive_field for n in g.layers()}
    # stem 3x3/2, then depthwise 3x3 convs: 3, 7, 11 (stride 2), 19 (the same measured by gradients)
    assert (rf["bn1"], rf["blocks.0.0"], rf["blocks.1.0"], rf["blocks.1.1"], rf["blocks.4.2"]) == (3, 7, 11, 19, 339)
    skips = {(e.src, e.dst) for e in g.edges if e.kind == "skip"}
    assert ("blocks.3.0", "blocks.3.1") in skips and ("blocks.3.1", "blocks.3.2") in skips and len(skips) == 9


def test_inceptionv1_concat_branches():
    g = model_graph(load_model("inceptionv1", random_weights=True))
    layers = [n.name for n in g.layers()]
    mixed = [n for n in layers if n.startswith("mixed")]
    assert mixed == ["mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e", "mixed5a", "mixed5b"]
    assert layers[0] == "conv2d0" and layers[-1] == "softmax2_pre_activation_matmul"
    assert not any(n.endswith("_pre_relu_conv") for n in layers)
    for m in mixed:
        assert g.node(m).merge == "concat"
        into = sorted(e.src for e in g.edges if e.dst == m)
        assert into == [f"{m}_{b}" for b in ("1x1", "3x3", "5x5", "pool_reduce")]
        assert all(g.node(b).kind == "branch" for b in into)
    feeds_4d = {e.src for e in g.edges if e.dst.startswith("mixed4d_")}
    assert feeds_4d == {"mixed4c"}


class Detaching(nn.Module):
    """Cuts the autograd graph inside forward: the trace cannot follow it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.drop = nn.Dropout()
        self.b = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.b(self.drop(self.a(x)).detach())


def test_untraceable_model_degrades_to_a_chain():
    model = load_model(ModelSpec(name="detaching", builder=Detaching, input_size=16))
    g = model_graph(model)
    assert not g.traced
    assert [n.name for n in g.layers()] == ["a", "b"]  # the dropout placeholder is still dropped
    assert [(e.src, e.dst) for e in g.edges] == [("input", "a"), ("a", "b")]


def test_graph_is_plain_data_through_the_task_codec():
    from vizsuite.tasks.codec import from_json, to_json
    from vizsuite.tasks.results import ModelGraph

    g = model_graph(load_model(TINY))
    assert from_json(ModelGraph, to_json(g)) == g
