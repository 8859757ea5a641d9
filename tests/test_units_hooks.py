"""The foundation: one unit type, one hook manager, one streaming pass, task dependencies."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vizsuite.capture import inference_copy
from vizsuite.errors import UserError
from vizsuite.hooks import Hooks, add, patch, replace, resolve, set_unit, zero
from vizsuite.stream import ChannelStats, TopExamples, stream
from vizsuite.units import (CHANNELS, BasisSet, Dictionary, Directions, LayerInfo, Unit, check_unit, load_basis,
                            parse_unit, save_basis)
from vizsuite.zoo.spec import ModelSpec, VisionModel

from .cli_helpers import assert_bad_input


def _wrap(net, size=16):
    spec = ModelSpec(name="tiny", builder=lambda: net, input_size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                     crop_pct=1.0)
    return VisionModel(net, spec).eval()


@pytest.fixture
def bases(tmp_path):
    gen = torch.Generator().manual_seed(0)
    d = Directions(torch.randn(3, 4, generator=gen), name="dirs", layer="0")
    k = Dictionary(torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen),
                   torch.randn(6, generator=gen), torch.randn(4, generator=gen), name="sae", layer="0")
    save_basis(d, tmp_path / "dirs.npz")
    save_basis(k, tmp_path / "sae.npz")
    return BasisSet.from_args([f"dirs={tmp_path / 'dirs.npz'}", f"sae={tmp_path / 'sae.npz'}"])


# ---------------------------------------------------------------- units

@pytest.mark.parametrize("text", ["blocks.4:12", "blocks.4:3@2,5", "0/dirs:2", "0/sae:5@1,0"])
def test_unit_grammar_round_trips(text, bases):
    u = parse_unit(text, bases)
    assert str(u) == text
    again = Unit.from_json(u.to_json())  # basis found again from its recorded path, hash checked
    assert again == u and str(again) == text
    assert Unit.from_json(u.to_json(), bases) == u


def test_bad_unit_text_and_unknown_basis(bases):
    for bad in ["blocks.4", "blocks.4:x", "blocks.4:1@2", ":3", "a/b/c:1"]:
        with pytest.raises(UserError, match="bad unit"):
            parse_unit(bad)
    with pytest.raises(UserError, match="unknown basis 'nope'"):
        parse_unit("0/nope:1", bases)
    layers = [LayerInfo("0", "Conv2d", (4, 8, 8), 4), LayerInfo("1", "Conv2d", (4, 8, 8), 4)]
    with pytest.raises(UserError, match="made for layer 0"):
        check_unit(Unit("1", 0, basis=bases["dirs"]), layers)
    with pytest.raises(UserError, match="out of range"):
        check_unit(parse_unit("0/dirs:3", bases), layers)
    other = Directions(torch.ones(1, 4), name="m", layer="0", model="a" * 32)
    with pytest.raises(UserError, match="another model"):
        check_unit(Unit("0", 0, basis=other), layers, model="b" * 32)
    assert check_unit(Unit("0", 0, basis=other), layers, model="a" * 32).name == "0"


def test_direction_unit_is_the_dot_product(bases):
    act = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    d = bases["dirs"]
    u = Unit("0", 1, basis=d)
    by_hand = (act * d.vectors[1].view(1, 4, 1, 1)).sum(1)
    assert torch.allclose(u.map(act), by_hand, atol=1e-12)
    assert torch.allclose(u.value(act), by_hand.mean((1, 2)), atol=1e-12)
    assert torch.allclose(u.at(2, 3).value(act), by_hand[:, 2, 3], atol=1e-12)
    # writing the feature moves the activation along the direction only, to the asked value
    edited = d.set_feature(act, 1, torch.tensor(7.0, dtype=torch.float64))
    assert torch.allclose(u.map(edited), torch.full((2, 5, 6), 7.0, dtype=torch.float64))


def test_dictionary_unit_is_its_encoder_output(bases):
    k = bases["sae"]
    act = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    x = act.permute(0, 2, 3, 1) - k.b_dec
    codes = torch.relu(x @ k.encoder.T + k.b_enc).permute(0, 3, 1, 2)  # N x K x H x W
    for i in range(6):
        assert torch.allclose(Unit("0", i, basis=k).map(act), codes[:, i], atol=1e-12)
    assert torch.allclose(k.encode(act), codes, atol=1e-12)
    topk = Dictionary(k.encoder, k.decoder, k.b_enc, k.b_dec, activation="topk", k=2)
    assert int((topk.encode(act) > 0).sum(1).max()) <= 2


def test_basis_file_checks(tmp_path, bases):
    path = tmp_path / "dirs.npz"
    with np.load(path) as z:
        arrays = {n: z[n] for n in z.files}
    arrays["vectors"] = arrays["vectors"] + 1.0  # tampered content, same recorded hash
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match="corrupt"):
        load_basis(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read basis"):
        load_basis(tmp_path / "junk.npz")
    with pytest.raises(UserError, match="NAME=PATH"):
        BasisSet.from_args(["nopath"])
    with pytest.raises(UserError, match="NaN"):
        Directions([[float("nan"), 1.0]])


# ---------------------------------------------------------------- hooks

class _Twice(nn.Module):
    """One conv module called twice per forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(torch.relu(self.conv(x)))


def _hooks_left(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_gone_after_exception_mid_forward():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))

    def boom(out):
        raise RuntimeError("edit failed")

    with pytest.raises(RuntimeError, match="edit failed"):
        with Hooks(net, ["2"], [replace("0", boom), zero(Unit("2", 0))]) as h:
            assert _hooks_left(net) > 0
            h(torch.rand(1, 3, 8, 8))
    assert _hooks_left(net) == 0
    with pytest.raises(UserError):
        with Hooks(net, ["0", "nope"]):
            pass
    assert _hooks_left(net) == 0


def test_module_called_twice_reads_and_writes_by_call():
    net = _Twice()
    x = torch.rand(2, 3, 4, 4)
    with Hooks(net, ["conv"], stop_early=False) as h:
        h(x)
        first, second = h.calls["conv"]
    assert torch.allclose(h.activations["conv"], first)
    assert torch.allclose(second, net(x))
    with torch.no_grad():  # zero channel 1 on the second call only
        with Hooks(net, (), [replace("conv", lambda o: o * torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1), call=1)],
                   stop_early=False):
            out = net(x)
            again = net(x)  # counts start afresh every forward
    expected = net.conv(torch.relu(net.conv(x)))
    expected[:, 1] = 0
    assert torch.allclose(out, expected) and torch.allclose(again, expected)


def test_write_on_folded_copy_acts_where_the_user_named_float64():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).double()
    bn = net[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    model = _wrap(net, 8).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)

    def by_hand(edit_conv=None, edit_bn=None):
        z = F.conv2d(x, net[0].weight, net[0].bias, padding=1)
        z = edit_conv(z) if edit_conv else z
        z = (z - bn.running_mean.view(1, -1, 1, 1)) / (bn.running_var.view(1, -1, 1, 1) + bn.eps).sqrt()
        z = z * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        z = edit_bn(z) if edit_bn else z
        return F.conv2d(torch.relu(z), net[3].weight, net[3].bias)

    def zero2(z):
        z = z.clone()
        z[:, 2] = 0
        return z

    # the user names the batch norm: the conv+BN output; on the copy the BN is folded away
    unit = Unit("1", 2)
    copy = inference_copy(model, x[:1], keep=["1"])
    assert isinstance(copy.net[1], nn.Identity)
    with torch.no_grad(), Hooks(copy, (), [zero(unit)], stop_early=False):
        got = copy(x)
    assert torch.allclose(got, by_hand(edit_bn=zero2), atol=1e-10)
    # the user names the conv: its own output, before the BN (kept unfolded by `keep`)
    copy = inference_copy(model, x[:1], keep=["0"])
    assert isinstance(copy.net[1], nn.BatchNorm2d)
    with torch.no_grad(), Hooks(copy, (), [zero(Unit("0", 2))], stop_early=False):
        got = copy(x)
    assert torch.allclose(got, by_hand(edit_conv=zero2), atol=1e-10)
    # the caller's model is untouched by either
    assert isinstance(model.net[1], nn.BatchNorm2d) and _hooks_left(model) == 0


def test_writes_under_redirected_relus_and_steering():
    from vizsuite.optvis.relu import RedirectedReLU, redirect_relus

    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    redirect_relus(net, "redirect")
    assert isinstance(resolve(net, "1"), RedirectedReLU)  # the name still addresses the layer
    x = torch.rand(1, 3, 4, 4)
    vec = torch.tensor([1.0, -2.0, 0.5, 3.0])
    with torch.no_grad(), Hooks(net, ["1"], [add("1", vec, alpha=2.0)], stop_early=False) as h:
        out = h(x)["1"]
    plain = torch.relu(net[0](x))
    assert torch.allclose(out, plain + 2.0 * vec.view(1, 4, 1, 1))
    stored = torch.rand(1, 4, 4, 4)
    with torch.no_grad(), Hooks(net, ["1"], [patch("1", stored, channels=[1])], stop_early=False) as h:
        got = h(x)["1"]
    assert torch.equal(got[:, 1], stored[:, 1]) and torch.equal(got[:, 0], plain[:, 0])
    with torch.no_grad(), Hooks(net, ["1"], [set_unit(Unit("1", 3, 1, 2), 9.0)], stop_early=False) as h:
        got = h(x)["1"]
    assert got[0, 3, 1, 2] == 9.0 and torch.equal(got[0, 3, 0], plain[0, 3, 0])


def test_linearized_patches_nothing_global():
    from vizsuite.analysis.linear import linearized

    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU(inplace=True), nn.MaxPool2d(2))
    net[0].weight.data.fill_(1.0)
    x = torch.tensor([[[[1.0, -3.0], [2.0, 4.0]]]])
    original = F.max_pool2d
    seen_elsewhere = []
    with linearized(net):
        assert F.max_pool2d is original  # the function itself is never swapped
        out = net(x)
        t = threading.Thread(target=lambda: seen_elsewhere.append(net(x)))  # another thread: untouched
        t.start()
        t.join()
    assert out.item() == pytest.approx(1.0)  # mean of (1, -3, 2, 4): identity ReLU, average pool
    assert seen_elsewhere[0].item() == pytest.approx(4.0)
    assert net(x).item() == pytest.approx(4.0) and _hooks_left(net) == 0
    assert all("forward" not in vars(m) for m in net.modules())


# ---------------------------------------------------------------- the streaming pass

@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(7):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(d / f"i{i}.png")
    (d / "broken.png").write_bytes(b"not a png")
    return d


def test_stream_reducers_against_hand_computation(folder, tmp_path, bases, monkeypatch):
    from vizsuite import stream as S
    from vizsuite.images import find_images, load_batch

    torch.manual_seed(0)
    model = _wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), 16)
    stats = ChannelStats("0")
    u = Unit("0", 1, basis=bases["dirs"])
    top = TopExamples("0", [Unit("0", 2), u], k=3)
    info = stream(model, folder, [stats, top], batch_size=3, progress=False, cache_dir=tmp_path / "c")
    assert info.skipped == 1 and info.computed == 2
    paths = [p for p in find_images(folder) if p.name != "broken.png"]
    with torch.no_grad():
        a = model.net[0](load_batch(paths, 16, 1.0)).double()
    assert torch.allclose(stats.mean, a.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(stats.var, a.var((0, 2, 3), unbiased=False), atol=1e-6)
    values = u.map(a.float()).flatten(1).max(1).values
    names = [p.name for p in find_images(folder)]
    best = [names.index(paths[i].name) for i in values.argsort(descending=True)[:3].tolist()]
    assert top.pos.images[1].tolist() == best  # the direction feature's top images
    # a rerun reads both reducers from the cache: the pass does not run
    monkeypatch.setattr(S, "image_batches", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    again_stats, again_top = ChannelStats("0"), TopExamples("0", [Unit("0", 2), u], k=3)
    info = stream(model, folder, [again_stats, again_top], progress=False, cache_dir=tmp_path / "c")
    assert info.reused == 2 and torch.equal(again_stats.sum, stats.sum)
    assert torch.equal(again_top.pos.images, top.pos.images)


# ---------------------------------------------------------------- tasks: inputs and expansion

from vizsuite.tasks import register_task  # noqa: E402


@register_task("_t_number")
def _t_number(task, ctx):
    if task["value"] < 0:
        raise ValueError("negative")
    return {"value": task["value"]}


@register_task("_t_double")
def _t_double(task, ctx):
    return {"value": 2 * ctx.input("x").meta["value"]}


def test_task_inputs_and_expansion(tmp_path):
    from vizsuite.tasks import make_task, run_tasks

    a = make_task("_t_number", value=3)
    b = make_task("_t_double", inputs={"x": a})
    assert b.key != make_task("_t_double", inputs={"x": make_task("_t_number", value=4)}).key
    assert a.key == make_task("_t_number", value=3).key
    grown = []

    def expand(task, result):
        if task.kind == "_t_double":
            t = make_task("_t_number", value=result.meta["value"] + 1)
            grown.append(t)
            return [t]
        return []

    report = run_tasks([b], tmp_path, progress=False, expand=expand)  # the input runs first, unasked
    assert report.result(b).meta == {"value": 6} and report.result(a).meta == {"value": 3}
    assert report.result(grown[0]).meta == {"value": 7} and report.computed == 3
    again = run_tasks([b], tmp_path, progress=False)
    assert again.computed == 0 and again.reused == 2
    bad = make_task("_t_double", inputs={"x": make_task("_t_number", value=-1)})
    report = run_tasks([bad], tmp_path, progress=False, raise_on_failure=False)
    assert {t.kind for t, _ in report.failed} == {"_t_number", "_t_double"}


def test_every_kind_registered_on_import():
    import subprocess
    import sys

    code = ("import vizsuite.tasks as T; from vizsuite.tasks.core import _REGISTRY; "
            "print(sorted(k for k in _REGISTRY if not k.startswith('_')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for kind in ("render_unit", "render_diversity", "dataset_examples", "unit_circuits", "circuit_graph",
                 "atlas_layout", "atlas_icons"):
        assert kind in out


def test_typed_results_round_trip():
    from vizsuite.tasks.codec import from_json, to_json
    from vizsuite.tasks.results import CircuitGraph, Connection, UnitCircuits

    c = UnitCircuits([Connection(3, -0.5, "inputs_3.png")], [], [])
    assert from_json(UnitCircuits, to_json(c)) == c
    g = CircuitGraph([[("b", 1)], [("a", 2)]], [(("a", 2), ("b", 1), 0.25)])
    back = from_json(CircuitGraph, to_json(g))
    assert back == g and back.nodes() == [("b", 1), ("a", 2)]


# ---------------------------------------------------------------- CLI

def test_cli_unit_errors_one_line_exit_2(tmp_path):
    d = Directions(torch.ones(2, 24), name="v", layer="blocks.1")
    save_basis(d, tmp_path / "v.npz")
    other = Directions(torch.ones(2, 24), name="v", layer="blocks.1", model="0" * 32)
    save_basis(other, tmp_path / "other.npz")
    base = ("layers", "efficientnet_lite0")
    assert_bad_input(*base, "blocks.1:x1", contains="bad unit")
    assert_bad_input(*base, "blocks.1/v:0", contains="unknown basis 'v'")
    assert_bad_input(*base, "blocks.2/v:0", "--basis", f"v={tmp_path / 'v.npz'}", contains="made for layer blocks.1")
    assert_bad_input(*base, "blocks.1/v:0", "--basis", f"v={tmp_path / 'other.npz'}", contains="another model")
    assert_bad_input(*base, "blocks.1/v:2", "--basis", f"v={tmp_path / 'v.npz'}", contains="out of range")
    assert_bad_input(*base, "blocks.1/v:0", "--basis", f"v={tmp_path / 'missing.npz'}", contains="not found")


def test_hooks_without_reads_or_edits_still_run_the_model():
    net = nn.Sequential(nn.Conv2d(3, 2, 1))
    x = torch.rand(1, 3, 4, 4)
    with Hooks(net) as h:
        assert h(x) == {} and torch.equal(h.output, net(x))
    with pytest.raises(RuntimeError, match="inside its `with` block"):
        h(x)


def test_one_target_grammar_for_attribution_and_interventions():
    from vizsuite.attribution import parse_target as attribution_target
    from vizsuite.interventions import parse_target as intervention_target
    from vizsuite.targets import parse_target

    assert attribution_target is parse_target  # the same grammar, not a copy
    assert parse_target("top5").k == 5 and parse_target("tabby").label == "tabby"
    assert intervention_target("top1").kind == "top1" and intervention_target(3).index == 3
    assert intervention_target("blocks.4:3@1,2").unit == parse_unit("blocks.4:3@1,2")
    for bad, why in (("top5", "one class per image"), ([1, 2], "one target for all images"),
                     ("-2", "indices start at 0"), ("", "bad target")):
        with pytest.raises(UserError, match=why):
            intervention_target(bad)
    with pytest.raises(UserError, match="--prob applies"):
        intervention_target("blocks.4:3", prob=True)
