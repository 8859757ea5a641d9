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
