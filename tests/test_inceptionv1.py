"""Our InceptionV1 against torch-lucent's: state-dict layout, logits and activations.

The reference numbers come from tests/fixtures/inceptionv1_reference.json, written by
tests/fixtures/make_inceptionv1_reference.py with lucent installed; the direct comparison
runs only where lucent is importable (the peers venv).
"""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from vizsuite.zoo import inceptionv1
from vizsuite.zoo.inceptionv1 import Concat, InceptionV1

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LABELS = Path(inceptionv1.__file__).resolve().parent / "data" / "inception5h_labels.txt"
LOGITS = "softmax2_pre_activation_matmul"


def _load_fill():
    spec = importlib.util.spec_from_file_location("inceptionv1_fill", FIXTURES / "inceptionv1_fill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fill = _load_fill()


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((FIXTURES / "inceptionv1_reference.json").read_text())


@pytest.fixture(scope="module")
def run_ours(reference):
    """Logits and the fixture's hooked activations of our filled model on the fixture input."""
    model = fill.fill_deterministic(InceptionV1()).eval()
    acts = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda m, i, o, name=name: acts.__setitem__(name, o)) for name in reference["stats"]]
    with torch.no_grad():
        logits = model(fill.reference_input())
    for h in handles:
        h.remove()
    return model, logits, acts


def _close(actual, expected, rtol=1e-4, atol=0.0):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=rtol, atol=atol)


def test_state_dict_layout_matches_lucent(reference):
    ours = [[k, list(v.shape)] for k, v in InceptionV1().state_dict().items()]
    assert ours == reference["state_dict"]  # same keys, shapes and even order
    assert not list(InceptionV1().buffers())


def test_logits_and_activations_match_reference(reference, run_ours):
    _, logits, acts = run_ours
    assert logits.shape == (2, inceptionv1.NUM_CLASSES)
    expected = torch.tensor(reference["logits"], dtype=torch.float64)
    # The fixture keeps 6 significant digits; allow that plus float32 summation-order noise.
    _close(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    for name, stats in reference["stats"].items():
        t = acts[name].double().flatten(1)
        assert list(acts[name].shape) == stats["shape"], name
        _close(t.sum(1), stats["sum"])
        _close(t.mean(1), stats["mean"])
        _close(t.std(1), stats["std"])
        _close(t.max(1).values, stats["max"])


def test_against_lucent_directly():
    lucent_zoo = pytest.importorskip("lucent.modelzoo.inceptionv1.InceptionV1")
    theirs = fill.fill_deterministic(lucent_zoo.InceptionV1(pretrained=False)).eval()
    ours = InceptionV1().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    names = ["conv2d0", "maxpool0", "conv2d2", "maxpool1", "mixed3a_pool", "mixed3a_5x5",
             "mixed3b", "maxpool4", "mixed4a", "mixed4e", "maxpool10", "mixed5b", LOGITS]
    got = {}
    for tag, model in (("ours", ours), ("theirs", theirs)):
        for name in names:
            model.get_submodule(name).register_forward_hook(
                lambda m, i, o, key=(tag, name): got.__setitem__(key, o))
    x = fill.reference_input()
    with torch.no_grad():
        ours(x)
        theirs(x)
    for name in names:
        a, b = got["ours", name], got["theirs", name]
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item(), msg=name)


def test_lucent_format_file_loads_strict(tmp_path, reference):
    # A state dict shaped like inception5h.pth (lucent's keys), saved and loaded as a user would.
    g = torch.Generator().manual_seed(2)
    state = OrderedDict((k, torch.randn(shape, generator=g)) for k, shape in reference["state_dict"])
    path = tmp_path / "inception5h.pth"
    torch.save(state, path)
    model = InceptionV1()
    result = model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(model.mixed4a_3x3_pre_relu_conv.weight, state["mixed4a_3x3_pre_relu_conv.weight"])


def test_lucid_layer_names_are_hookable_modules(run_ours):
    model, _, acts = run_ours
    assert acts["mixed4a"].shape == (2, 508, 14, 14)
    modules = dict(model.named_modules())
    for name in inceptionv1.DEFAULT_LAYERS:
        assert name in modules
    for block in ["mixed3a", "mixed3b", "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e",
                  "mixed5a", "mixed5b"]:
        assert isinstance(modules[block], Concat)
        assert isinstance(modules[f"{block}_pool"], torch.nn.MaxPool2d)
        for branch in ["1x1", "3x3_bottleneck", "5x5_bottleneck", "pool_reduce", "3x3", "5x5"]:
            relu = modules[f"{block}_{branch}"]
            assert isinstance(relu, torch.nn.ReLU) and not relu.inplace
    for name in ["maxpool0", "maxpool1", "maxpool4", "maxpool10", "localresponsenorm0",
                 "localresponsenorm1", "avgpool0"]:
        assert name in modules
    # Shapes of Lucid's tensors at 224 px.
    x = torch.zeros(1, 3, inceptionv1.INPUT_SIZE, inceptionv1.INPUT_SIZE)
    shapes = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
               for n in ["conv2d0", "maxpool0", "conv2d2", "maxpool1", "mixed3b", "maxpool4",
                         "mixed4e", "maxpool10", "mixed5b", "avgpool0"]]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    assert shapes == {"conv2d0": (1, 64, 112, 112), "maxpool0": (1, 64, 56, 56),
                      "conv2d2": (1, 192, 56, 56), "maxpool1": (1, 192, 28, 28),
                      "mixed3b": (1, 480, 28, 28), "maxpool4": (1, 480, 14, 14),
                      "mixed4e": (1, 832, 14, 14), "maxpool10": (1, 832, 7, 7),
                      "mixed5b": (1, 1024, 7, 7), "avgpool0": (1, 1024, 1, 1)}


def test_labels_file():
    labels = LABELS.read_text(encoding="utf-8").splitlines()
    assert len(labels) == inceptionv1.NUM_CLASSES
    assert all(label.strip() for label in labels)
    assert labels[:3] == ["dummy", "kit fox", "English setter"]
    assert labels[1000] == "dumbbell"


@pytest.mark.parametrize("stride,pad", [(2, (0, 1, 0, 1)), (1, (1, 1, 1, 1))])
def test_padded_max_pool_without_a_padded_copy_is_bitwise_the_padded_one(stride, pad):
    """The pool's own -inf padding / ceil_mode equals pooling an explicitly -inf-padded copy,
    forward and backward, bit for bit (ties at zero included: post-ReLU input)."""
    import torch.nn.functional as F

    from vizsuite.zoo.inceptionv1 import PaddedMaxPool2d

    pool = PaddedMaxPool2d(stride, pad)
    g = torch.Generator().manual_seed(0)
    for hw in [(112, 112), (57, 57), (28, 29)]:
        x = torch.relu(torch.randn(2, 5, *hw, generator=g))
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya = pool(a)
        yb = torch.nn.MaxPool2d.forward(pool, F.pad(b, pad, value=float("-inf")))
        w = torch.randn(ya.shape, generator=g)
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)
