"""Capture: hooks never outlive the call; truncated forwards equal full ones and stop early."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vizsuite.capture import Capture, activations, check_unit, list_layers, parse_unit, Unit
from vizsuite.errors import UserError


def _hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def test_hooks_removed_after_normal_and_failing_capture(effnet):
    before = _hook_count(effnet)
    x = torch.rand(1, 3, 224, 224)
    with Capture(effnet, ["blocks.2", "blocks.4"]) as cap:
        assert _hook_count(effnet) == before + 2
        cap(x)
    assert _hook_count(effnet) == before
    with pytest.raises(RuntimeError, match="boom"):
        with Capture(effnet, ["blocks.2"]) as cap:
            cap(x)
            raise RuntimeError("boom")
    assert _hook_count(effnet) == before
    # a failure inside the forward itself
    with pytest.raises(RuntimeError):
        with Capture(effnet, ["blocks.2"]) as cap:
            cap(torch.rand(1, 5, 64, 64))  # wrong channel count
    assert _hook_count(effnet) == before


def test_truncated_forward_equals_full_forward_and_skips_later_layers(effnet):
    x = torch.rand(2, 3, 224, 224)
    ran = []
    probe = effnet.layer("blocks.5").register_forward_hook(lambda *a: ran.append(True))
    try:
        early = activations(effnet, x, ["blocks.3"])
        assert not ran, "layers after the requested one must not run"
        full = activations(effnet, x, ["blocks.3"], stop_early=False)
        assert ran
    finally:
        probe.remove()
    assert torch.equal(early["blocks.3"], full["blocks.3"])
    assert early["blocks.3"].shape == (2, 80, 14, 14)


def test_capture_output_set_only_when_forward_completes(effnet):
    x = torch.rand(1, 3, 224, 224)
    with Capture(effnet, ["blocks.6"], stop_early=False) as cap:
        cap(x)
        assert cap.output.shape == (1, 1000)
    with Capture(effnet, ["blocks.1"]) as cap:
        cap(x)
        assert cap.output is None


def test_capture_keeps_graph_for_gradients(effnet):
    x = torch.rand(1, 3, 224, 224, requires_grad=True)
    with Capture(effnet, ["blocks.4"]) as cap:
        act = cap(x)["blocks.4"]
    act[0, 3].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_capture_unknown_layer_suggests(effnet):
    with pytest.raises(UserError, match="did you mean"):
        Capture(effnet, ["blocks.44"])


def test_list_layers(effnet):
    layers = list_layers(effnet)
    by_name = {info.name: info for info in layers}
    assert by_name["blocks.4"].shape == (112, 14, 14) and by_name["blocks.4"].default
    assert by_name["conv_stem"].channels == 32 and not by_name["conv_stem"].default
    assert by_name["classifier"].shape == (1000,)
    assert len(layers) > 100
    names = [i.name for i in layers]
    assert names.index("blocks.1") < names.index("blocks.4")  # execution order


def test_parse_and_check_unit(effnet):
    layers = list_layers(effnet)
    assert parse_unit("blocks.4:12") == Unit("blocks.4", 12)
    assert parse_unit("blocks.4:12@3,5") == Unit("blocks.4", 12, 3, 5)
    assert str(parse_unit("blocks.4:12@3,5")) == "blocks.4:12@3,5"
    check_unit(parse_unit("blocks.4:111"), layers)
    with pytest.raises(UserError, match="112 channels"):
        check_unit(parse_unit("blocks.4:112"), layers)
    with pytest.raises(UserError, match="out of range"):
        check_unit(parse_unit("blocks.4:1@14,0"), layers)
    with pytest.raises(UserError, match="bad unit"):
        parse_unit("blocks.4")


# ---------------------------------------------------------------- inference copies

def _bn_net(shared_conv_output: bool = False) -> nn.Module:
    """conv -> BN -> ReLU -> conv -> BN (random statistics, eval); optionally the first conv's
    raw output is also added after the first BN, which makes folding that BN wrong."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.relu = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()
            self.conv2, self.bn2 = nn.Conv2d(6, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv1(x)
            z = self.bn1(y) + (y if shared_conv_output else 0)
            return self.bn2(self.conv2(self.relu(z)))

    torch.manual_seed(0)
    net = Net()
    for bn in (net.bn1, net.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
        bn.weight.data.uniform_(0.5, 2)
        bn.bias.data.uniform_(-1, 1)
    return net.eval()


def _ran(model, x) -> list[str]:
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(type(m).__name__)) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def test_inference_copy_folds_batch_norms_and_leaves_the_original_alone():
    from vizsuite.capture import inference_copy

    net = _bn_net()
    net.train()  # the caller's mode must survive
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 9, 9, dtype=torch.float32)
    fast = inference_copy(net, x)
    assert "BatchNorm2d" not in _ran(fast, x)
    assert not any(p.requires_grad for p in fast.parameters())
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    net.eval()
    expected = net(x)
    torch.testing.assert_close(fast(x), expected, rtol=1e-5, atol=1e-5)
    # original untouched: same values, still has its batch norms, grads still on
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert isinstance(net.bn1, nn.BatchNorm2d) and all(p.requires_grad for p in net.parameters())
    assert net.conv1.weight.is_contiguous()


def test_inference_copy_keeps_batch_norms_of_read_convs_and_refuses_a_wrong_fold():
    from vizsuite.capture import inference_copy

    x = torch.randn(2, 3, 9, 9)
    net = _bn_net()
    kept = inference_copy(net, x, keep=["conv1"])
    assert isinstance(kept.bn1, nn.BatchNorm2d) and not isinstance(kept.bn2, nn.BatchNorm2d)
    torch.testing.assert_close(activations(kept, x, ["conv1"])["conv1"],
                               activations(net, x, ["conv1"])["conv1"])
    # conv1's output also feeds the sum: folding bn1 would change the model, so nothing is folded
    shared = _bn_net(shared_conv_output=True)
    safe = inference_copy(shared, x)
    assert _ran(safe, x).count("BatchNorm2d") == 2
    torch.testing.assert_close(safe(x), shared(x))


def test_inference_copy_of_efficientnet_keeps_activations(effnet):
    """timm's BatchNormAct2d: the normalization folds, the ReLU6 stays; blocks.4 and logits equal."""
    from vizsuite.capture import inference_copy

    x = torch.rand(2, 3, 224, 224)
    fast = inference_copy(effnet, x, keep=["blocks.4"])
    ran = _ran(fast, x)
    original = _ran(effnet, x)
    assert original.count("BatchNormAct2d") >= 40 and ran.count("BatchNormAct2d") == 0
    assert ran.count("ReLU6") == original.count("ReLU6") > 30
    with torch.no_grad():
        ours, ref = activations(fast, x, ["blocks.4"]), activations(effnet, x, ["blocks.4"])
        torch.testing.assert_close(ours["blocks.4"], ref["blocks.4"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fast(x), effnet(x), rtol=1e-4, atol=1e-3)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in effnet.modules()) >= 40


def test_torchscript_layers_give_one_clear_error_and_class_renders_work():
    """TorchScript modules take no hooks: reading a layer is a UserError; class objectives,
    which need only the output, render (through the inference copy) as on the Python model."""
    from vizsuite.optvis import channel, class_logit, render
    from vizsuite.zoo.spec import VisionModel

    from .optvis_helpers import tiny_cnn

    model = tiny_cnn()
    scripted = VisionModel(torch.jit.script(model.net), model.spec).eval()
    with pytest.raises(UserError, match="TorchScript"):
        render(scripted, channel("conv2", 1), steps=1, progress=False)
    a = render(model, class_logit(3), steps=4, progress=False)
    b = render(scripted, class_logit(3), steps=4, progress=False)
    assert torch.allclose(a.images, b.images, atol=1e-4)
