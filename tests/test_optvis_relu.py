"""Redirected ReLU gradients (Lucid's rule): exact wherever gradient flows, redirected where it dies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vizsuite.optvis import channel, evaluate, render
from vizsuite.optvis.relu import LEAK, RedirectedReLU, redirect_relus


def _grad(module, x, g):
    x = x.clone().requires_grad_()
    (out,) = torch.autograd.grad(module(x), x, g)
    return out


def test_exact_gradient_wherever_any_gradient_flows():
    torch.manual_seed(0)
    x = 4 * torch.randn(3, 5, 7, 7, dtype=torch.float64)
    g = torch.randn_like(x)
    for ref, ours in ((nn.ReLU(), RedirectedReLU(0.0)), (nn.ReLU6(), RedirectedReLU(0.0, 6.0))):
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
        torch.testing.assert_close(_grad(ours, x, g), _grad(ref, x, g), rtol=0, atol=0)


def test_an_image_whose_gradient_dies_gets_it_redirected_towards_the_active_range():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    x[1] = -x[1].abs() - 0.1            # image 1: every ReLU input negative, nothing gets through
    x[1, 0, 0, :3] = 7.0                # ... for ReLU6 also some above the ceiling
    g = torch.randn_like(x)
    relu6 = RedirectedReLU(0.0, 6.0)
    got = _grad(relu6, x, g)
    torch.testing.assert_close(got[0], _grad(nn.ReLU6(), x, g)[0], rtol=0, atol=0)  # image 0: exact
    # image 1: the incoming gradient, except where descent would push an input further out of range
    push = ((x[1] < 0) & (g[1] > 0)) | ((x[1] > 6) & (g[1] < 0))
    torch.testing.assert_close(got[1], g[1].masked_fill(push, 0), rtol=0, atol=0)
    assert got[1].abs().sum() > 0 and _grad(nn.ReLU6(), x, g)[1].abs().sum() == 0


def test_redirect_relus_replaces_plain_relus_only():
    class MyReLU(nn.ReLU):  # a subclass may compute something else: left alone
        def forward(self, x):
            return super().forward(x) * 2

    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(inplace=True), nn.Sequential(nn.ReLU6(), MyReLU()),
                        nn.Hardtanh(-1.0, 1.0))
    assert redirect_relus(net) == 2
    assert isinstance(net[1], RedirectedReLU) and isinstance(net[2][0], RedirectedReLU)
    assert net[2][0].hi == 6.0 and type(net[2][1]) is MyReLU and type(net[3]) is nn.Hardtanh


def _dead_unit_model():
    """One unit, relu(r + g + b - 2.4): dead on any image darker than 0.8 on average (the grey
    start is 0.5), alive on brighter ones; exact gradients can never start it."""
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-2.4)
    return nn.Sequential(conv, nn.ReLU())


def test_render_wakes_a_dead_unit_and_leaves_the_callers_model_alone():
    model = _dead_unit_model()
    kw = dict(size=32, steps=60, seed=0, progress=False, transforms="none")
    exact = render(model, channel("1", 0), relu_grad="exact", **kw)
    redirected = render(model, channel("1", 0), **kw)
    start = render(model, channel("1", 0), relu_grad="exact", **{**kw, "steps": 1}).images
    assert torch.equal(exact.images, start)  # no gradient ever: the image never moved
    assert evaluate(model, channel("1", 0), exact.images).item() == 0
    assert evaluate(model, channel("1", 0), redirected.images).item() > 0.01  # it fires
    assert type(model[1]) is nn.ReLU  # only the render's private copy was changed


def test_leaky_rule_is_torch_lucents():
    """lucent's RedirectedReLU: grad where the input is positive, 0.1 x grad where negative."""
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    g = torch.randn_like(x)
    got = _grad(RedirectedReLU(0.0, None, "leaky"), x, g)
    torch.testing.assert_close(got, torch.where(x < 0, LEAK * g, g), rtol=0, atol=0)
    x6 = 8 * x
    got6 = _grad(RedirectedReLU(0.0, 6.0, "leaky"), x6, g)
    torch.testing.assert_close(got6, torch.where((x6 < 0) | (x6 > 6), LEAK * g, g), rtol=0, atol=0)


def test_default_rule_comes_from_the_model_card(tmp_path):
    from vizsuite.errors import UserError
    from vizsuite.optvis.render import default_relu_grad
    from vizsuite.zoo import load_model

    assert default_relu_grad(load_model("inceptionv1", random_weights=True)) == "leaky"
    assert default_relu_grad(load_model("efficientnet_lite0", random_weights=True)) == "redirect"
    assert default_relu_grad(_dead_unit_model()) == "redirect"  # a plain module has no card
    with pytest.raises(UserError, match="relu_grad"):
        render(_dead_unit_model(), channel("1", 0), relu_grad="sometimes", steps=1, progress=False)


class _Planted(nn.Module):
    """Four conv -> ReLU pairs, of which only the first two may fuse: the third conv's output
    also feeds a sum (a ReLU after it would change that sum), the fourth conv is named in keep."""

    def __init__(self):
        super().__init__()
        self.a, self.ra = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), nn.ReLU())
        self.c, self.rc = nn.Conv2d(8, 8, 1), nn.ReLU()
        self.d, self.rd = nn.Conv2d(8, 4, 1), nn.ReLU()

    def forward(self, x):
        x = self.block(self.ra(self.a(x)))
        c = self.c(x)
        x = self.rc(c) + c
        return self.rd(self.d(x))


@pytest.mark.parametrize("rule", ["exact", "leaky"])
def test_conv_relu_fusion_finds_only_safe_pairs_and_keeps_values_and_gradients(rule):
    from vizsuite.optvis.convs import Applied, ConvReLU, prepare_render_copy

    torch.manual_seed(0)
    ref = _Planted().eval().requires_grad_(False)
    fused = _Planted().eval().requires_grad_(False)
    fused.load_state_dict(ref.state_dict())
    redirect_relus(ref, rule)
    prepare_render_copy(fused, rule, keep=("d",))
    assert isinstance(fused.a, ConvReLU) and isinstance(fused.ra, Applied)
    assert isinstance(fused.block[0], ConvReLU) and isinstance(fused.block[1], Applied)
    assert type(fused.c) is nn.Conv2d and type(fused.d) is nn.Conv2d     # shared output; kept
    x = torch.randn(2, 3, 9, 9)
    g = torch.randn(2, 4, 5, 5)
    for fmt in (torch.contiguous_format, torch.channels_last):
        xr = x.contiguous(memory_format=fmt)
        torch.testing.assert_close(fused(xr), ref(xr), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_grad(fused, xr, g), _grad(ref, xr, g), rtol=1e-5, atol=1e-5)
    # hooks on the ReLU's name still read the activation (now the fused conv's output)
    seen = []
    handle = fused.ra.register_forward_hook(lambda m, i, o: seen.append(o))
    fused(x)
    handle.remove()
    assert torch.equal(seen[0], torch.relu(ref.a(x)))


def test_render_copy_of_inceptionv1_is_rewritten_and_computes_the_same_gradient():
    """The render copy of InceptionV1 fuses all 57 conv + ReLU pairs in front of mixed4a's
    objective and runs its stride-2 stem unshuffled; the objective and its gradient at the image
    equal the plain copy's (fp32 rounding only)."""
    import importlib

    from vizsuite.optvis.convs import ConvReLU, UnshuffledConv2d
    from vizsuite.zoo import load_model

    R = importlib.import_module("vizsuite.optvis.render")
    model = load_model("inceptionv1", random_weights=True)
    example = torch.rand(1, 3, 224, 224)
    net = R._render_copy(model, example, ("mixed4a",), False, True, True, "fp32", "leaky")
    assert sum(isinstance(m, ConvReLU) for m in net.modules()) == 57
    assert isinstance(net.layer("conv2d0_pre_relu_conv").conv, UnshuffledConv2d)
    # the stem normalizes the [0, 1] input itself (VisionModel.forward skips its normalize)
    assert net.raw_input and net.layer("conv2d0_pre_relu_conv").conv.affine is not None
    # a pre-ReLU objective keeps its conv unfused (its hook reads the pre-activation)
    pre = R._render_copy(model, example, ("mixed4a_1x1_pre_relu_conv",), False, True, True, "fp32", "leaky")
    assert type(pre.layer("mixed4a_1x1_pre_relu_conv")) is nn.Conv2d
    plain = R.shared_copy(model, example, keep=("mixed4a",), output=False, channels_last=True,
                          fold_batchnorm=True, finish=(redirect_relus, "leaky"))
    assert not any(isinstance(m, (ConvReLU, UnshuffledConv2d)) for m in plain.modules()) and not plain.raw_input
    from vizsuite.capture import Capture

    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    out = []
    for copy in (net, plain):
        xi = x.clone().contiguous(memory_format=torch.channels_last).requires_grad_()
        with Capture(copy, ["mixed4a"]) as cap:
            act = cap(xi)["mixed4a"]
        value = act[:, :8].mean()
        (grad,) = torch.autograd.grad(value, xi)
        out.append((act.detach(), grad))
    (a0, g0), (a1, g1) = out
    torch.testing.assert_close(a0, a1, rtol=1e-4, atol=1e-4 * float(a1.abs().max()))
    # not elementwise: a rounding difference of 1e-7 decides some max-pool ties among ReLU zeros
    # differently, which moves that gradient to another pixel. The plain channels-last copy is
    # itself 0.35 % (L2) from float64 that way, the rewritten one 0.7 %, the NCHW one 4e-7.
    assert float((g0 - g1).norm() / g1.norm()) < 2e-2 and g1.abs().max() > 0


@pytest.mark.parametrize("channels,size,kernel,stride,padding", [
    (3, 229, 7, 2, 0), (3, 224, 7, 2, 3), (4, 33, 3, 2, 1), (1, 31, (5, 3), 3, (2, 0))])
def test_unshuffled_conv_is_the_strided_conv_in_float64(channels, size, kernel, stride, padding):
    from vizsuite.optvis.convs import UnshuffledConv2d

    torch.manual_seed(0)
    conv = nn.Conv2d(channels, 8, kernel, stride=stride, padding=padding).double().requires_grad_(False)
    assert UnshuffledConv2d.applies(conv)
    fast = UnshuffledConv2d(conv)
    x = torch.randn(2, channels, size, size + 2, dtype=torch.float64)
    g = torch.randn_like(conv(x))
    torch.testing.assert_close(fast(x), conv(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_grad(fast, x, g), _grad(conv, x, g), rtol=1e-12, atol=1e-12)
    assert not UnshuffledConv2d.applies(nn.Conv2d(64, 64, 3, stride=2))     # 256 channels rearranged
    assert not UnshuffledConv2d.applies(nn.Conv2d(3, 8, 3, stride=1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_a_stem_that_absorbs_the_normalization_is_the_padded_conv_of_the_normalized_image(dtype):
    """`absorb_normalization`: a VisionModel whose net hands its input to a PaddedConv2d stem (TF
    SAME padding, asymmetric) gives the stem its normalization and cast; output and input gradient
    equal normalize -> F.pad -> strided conv in float64 (the kernels for fp32 / bf16, torch's ops
    for float64). Not when the input has another reader, or the stem is hooked."""
    from vizsuite.optvis.convs import UnshuffledConv2d, absorb_normalization
    from vizsuite.zoo.inceptionv1 import PaddedConv2d
    from vizsuite.zoo.spec import ModelSpec, VisionModel

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self, twice=False):
            super().__init__()
            self.stem = PaddedConv2d(3, 8, 7, stride=2, pad=(2, 3, 2, 3))
            self.twice = twice

        def forward(self, x):
            y = self.stem(x)
            return y + x.mean() if self.twice else y

    spec = ModelSpec("toy", builder=Net, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    ref = VisionModel(Net(), spec).double().eval().requires_grad_(False)
    model = VisionModel(Net(), spec).eval().requires_grad_(False)
    model.load_state_dict(ref.state_dict())
    model.to(dtype)
    model.net.stem = UnshuffledConv2d(model.net.stem)
    assert absorb_normalization(model) and model.raw_input and not absorb_normalization(model)
    x = torch.rand(2, 3, 40, 38, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    expected = ref(xr)
    xi = x.float().contiguous(memory_format=torch.channels_last).requires_grad_() if dtype != torch.float64 \
        else x.clone().requires_grad_()
    got = model(xi)
    assert got.dtype == dtype and xi.dtype != torch.bfloat16
    g = torch.randn(got.shape, dtype=torch.float64)
    expected.backward(g)
    got.backward(g.to(dtype))
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    got, expected = got.detach(), expected.detach()
    assert float((got.double() - expected).abs().max()) <= tol * float(expected.abs().max())
    assert float((xi.grad.double() - xr.grad).norm()) <= tol * float(xr.grad.norm())
    for bad in (VisionModel(Net(twice=True), spec), VisionModel(Net(), spec)):
        bad.eval().requires_grad_(False)
        bad.net.stem = UnshuffledConv2d(bad.net.stem)
        if not bad.net.twice:
            bad.net.stem.register_forward_pre_hook(lambda m, i: None)
        assert not absorb_normalization(bad) and not bad.raw_input


class _PoolAndNorm(nn.Module):
    """InceptionV1's stem pattern: conv -> ReLU -> max pool, conv -> ReLU -> LRN, and a third
    pair whose ReLU output also feeds a sum (that pool must not take the ReLU's backward)."""

    def __init__(self):
        super().__init__()
        from vizsuite.zoo.inceptionv1 import PaddedMaxPool2d
        from vizsuite.zoo.lrn import LocalResponseNorm

        self.a, self.ra, self.pa = nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), PaddedMaxPool2d(2, (0, 1, 0, 1))
        self.b, self.rb, self.nb = nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), LocalResponseNorm(9, 1e-2, 0.5, 1.0)
        self.c, self.rc, self.pc = nn.Conv2d(24, 8, 1), nn.ReLU(), PaddedMaxPool2d(1, (1, 1, 1, 1))

    def forward(self, x):
        x = self.nb(self.rb(self.b(self.pa(self.ra(self.a(x))))))
        y = self.rc(self.c(x))
        return self.pc(y) + y


@pytest.mark.parametrize("rule", ["exact", "leaky"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_pool_or_lrn_after_a_fused_relu_applies_its_rule_and_the_gradient_is_unchanged(rule, dtype):
    """The pool / LRN that alone reads a fused ReLU's output applies the rule's backward in its
    own pass (kernels in float32 channels-last, `relu_rule_grad` on torch's path in float64 and
    NCHW); the input gradient equals the unfused network's, also with negative inputs (the
    leaky rule's leak reaches them)."""
    from vizsuite.optvis.convs import ConvReLU, prepare_render_copy

    torch.manual_seed(1)
    ref = _PoolAndNorm().eval().requires_grad_(False).to(dtype)
    fused = _PoolAndNorm().eval().requires_grad_(False).to(dtype)
    fused.load_state_dict(ref.state_dict())
    redirect_relus(ref, rule)
    prepare_render_copy(fused, rule)
    assert isinstance(fused.a, ConvReLU) and fused.a.rule_after and fused.pa.input_relu == fused.a.leak
    assert fused.b.rule_after and fused.nb.input_relu == (LEAK if rule == "leaky" else 0.0)
    assert isinstance(fused.c, ConvReLU) and not fused.c.rule_after and fused.pc.input_relu is None
    x = torch.randn(2, 3, 12, 14, dtype=dtype)
    g = torch.randn(2, 8, 6, 7, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for fmt in (torch.contiguous_format, torch.channels_last):
        xr = x.contiguous(memory_format=fmt)
        torch.testing.assert_close(fused(xr), ref(xr), rtol=tol, atol=tol)
        torch.testing.assert_close(_grad(fused, xr, g), _grad(ref, xr, g), rtol=tol, atol=tol)


def test_a_conv_called_twice_is_not_fused():
    from vizsuite.optvis.convs import fuse_conv_relus

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(self.relu(self.conv(x))))

    net = Shared().eval().requires_grad_(False)
    assert fuse_conv_relus(net) == 0 and type(net.conv) is nn.Conv2d
