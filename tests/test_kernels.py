"""The fused CPU kernels (vizsuite.kernels) against float64 references, and the layers that use
them against their PyTorch paths."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from vizsuite import kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason=kernels.status())

CL = torch.channels_last
# bf16 stores 8 mantissa bits: outputs are within half an ulp of the fp32 result (2^-9)
TOL = {torch.float32: 2e-6, torch.bfloat16: 5e-3}


def _cl(t, dtype):
    return t.to(dtype).contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,stride,pad", [
    ((2, 64, 23, 23), 2, (0, 1, 0, 1)),     # InceptionV1's stride-2 pools (TF SAME)
    ((2, 48, 14, 14), 1, (1, 1, 1, 1)),     # its stride-1 branch pools
    ((1, 5, 7, 9), 2, (1, 0, 2, 1)),        # any asymmetric padding, odd channel count
    ((3, 17, 6, 5), 3, (0, 0, 0, 0)),
])
def test_maxpool_matches_float64_with_ties(dtype, shape, stride, pad):
    gen = torch.Generator().manual_seed(0)
    # rounded values: many ties, where torch's first-maximum rule decides the gradient's place
    x = _cl((torch.randn(shape, generator=gen) * 2).round(), dtype)
    ref = x.double().requires_grad_()
    y_ref = F.max_pool2d(F.pad(ref, pad, value=float("-inf")), 3, stride)
    g = _cl(torch.randn(y_ref.shape, generator=gen), dtype)
    y_ref.backward(g.double())
    y, idx = kernels.maxpool3x3(x, stride, pad)
    assert y.dtype == dtype and y.is_contiguous(memory_format=CL) and idx.dtype == torch.uint8
    assert torch.equal(y.double(), y_ref.detach())            # a max is exact
    gx = kernels.maxpool3x3_backward(g, idx, tuple(x.shape[2:]), stride, pad)
    assert gx.shape == x.shape
    # overlapping windows add several output gradients into one input: rounding in bf16 only
    assert torch.allclose(gx.double(), ref.grad, rtol=TOL[dtype], atol=TOL[dtype] * 4)
    assert kernels.maxpool3x3(x, stride, pad, indices=False)[1] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels,size,beta", [(192, 9, 0.5), (64, 9, 0.5), (7, 4, 0.75), (3, 5, 1.0)])
def test_lrn_matches_float64(dtype, channels, size, beta):
    gen = torch.Generator().manual_seed(1)
    # InceptionV1's scale: activations of tens to hundreds, where the norm is far from 1
    x = _cl(torch.randn(2, channels, 5, 6, generator=gen) * 80, dtype)
    alpha, k = 9.99999974738e-05, 1.0
    ref = x.double().requires_grad_()
    y_ref = F.local_response_norm(ref, size, alpha, beta, k)
    g = _cl(torch.randn(y_ref.shape, generator=gen), dtype)
    y_ref.backward(g.double())
    y = kernels.lrn(x, size, alpha, beta, k)
    gx = kernels.lrn_backward(x, g, size, alpha, beta, k)

    def rel(a, b):
        return float((a.double() - b).abs().max() / b.abs().max())

    assert y.dtype == dtype and y.is_contiguous(memory_format=CL)
    assert rel(y, y_ref.detach()) < TOL[dtype]
    assert rel(gx, ref.grad) < TOL[dtype]
    # the norm matters here (a kernel that skipped it would fail): y differs from x a lot
    assert rel(x, y_ref.detach()) > 0.05


def test_only_channels_last_float_cpu_tensors_qualify():
    x = torch.randn(1, 4, 5, 5)
    assert not kernels.usable(x)                                   # NCHW
    assert kernels.usable(x.contiguous(memory_format=CL))
    assert not kernels.usable(x.contiguous(memory_format=CL).double())
    assert not kernels.usable(torch.randn(4, 5, 5))


def test_inceptionv1_layers_take_the_fused_path_and_agree_with_torch():
    """Channels-last input runs the fused pools and LRNs; NCHW runs the PyTorch path. Same model,
    same input: outputs and input gradients agree (fp32 rounding only)."""
    from vizsuite.zoo.inceptionv1 import InceptionV1

    torch.manual_seed(0)
    net = InceptionV1().eval()
    x = torch.rand(2, 3, 224, 224) * 255 - 117
    grads, outs = [], []
    for fmt in (torch.contiguous_format, CL):
        xi = x.clone().contiguous(memory_format=fmt).requires_grad_()
        out = net(xi)
        out[:, :10].sum().backward()
        outs.append(out.detach())
        grads.append(xi.grad)
    assert torch.allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4 * outs[0].abs().max())
    # the whole net's input gradient in L2, not elementwise: a 1e-7 rounding difference flips
    # near-ties in later max pools, which moves those gradients to another pixel (both fp32 paths
    # are 0.06-0.9 % from float64 that way, depending on the seed)
    assert float((grads[0] - grads[1]).norm() / grads[0].norm()) < 2e-2 and grads[0].abs().max() > 0
    from torch.profiler import profile

    xi = x[:1].contiguous(memory_format=CL).requires_grad_()
    with profile() as prof:
        net(xi).sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert {"_FusedMaxPool", "_FusedLRN", "_FusedMaxPoolBackward", "_FusedLRNBackward"} <= names
    assert "aten::max_pool2d_with_indices" not in names


def test_switched_off_or_unbuildable_falls_back_with_a_reason(tmp_path):
    code = "from vizsuite import kernels; print(kernels.available()); print(kernels.status())"
    for env, reason in [({"VIZSUITE_KERNELS": "0"}, "VIZSUITE_KERNELS=0"),
                        ({"CC": str(tmp_path / "no-such-cc"), "VIZSUITE_CACHE": str(tmp_path)}, "FileNotFoundError")]:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split("\n")
        assert lines[0] == "False" and "off" in lines[1] and reason in lines[1]


def test_built_once_into_the_cache(tmp_path):
    code = ("import time; t = time.perf_counter(); from vizsuite import kernels; "
            "assert kernels.available(); print(kernels._lib._name)")
    env = {**os.environ, "VIZSUITE_CACHE": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    built = sorted((tmp_path / "kernels").iterdir())
    assert [p.suffix for p in built] == [".so"]                     # no temp file left behind
    mtime = built[0].stat().st_mtime_ns
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert second.stdout == first.stdout and built[0].stat().st_mtime_ns == mtime


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("leak", [0.0, 0.1])
def test_relu_backward_is_torchs_bit_for_bit_also_on_channel_slices(dtype, leak):
    gen = torch.Generator().manual_seed(2)
    y = _cl(torch.randn(2, 6, 5, 7, generator=gen).clamp(min=0), dtype)
    whole = _cl(torch.randn(2, 15, 5, 7, generator=gen), dtype)
    for g in (_cl(torch.randn(2, 6, 5, 7, generator=gen), dtype), whole[:, 4:10]):    # rows, slice
        assert kernels.row_stride(g) == g.stride(3)
        ref = (torch.ops.aten.leaky_relu_backward(g, y, leak, False) if leak
               else torch.ops.aten.threshold_backward(g, y, 0))
        got = kernels.relu_backward(g, y, leak)
        assert torch.equal(got, ref) and got.is_contiguous(memory_format=CL)
    assert kernels.row_stride(torch.randn(2, 6, 5, 7)) is None                 # NCHW
    assert kernels.row_stride(whole[:, :, 1:]) is None                         # uneven pixel spacing


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "cl", "slice"])
def test_space_to_depth_is_pad_and_rearrange(dtype, layout):
    """Against F.pad + the (dy, dx, channel) rearrangement written with views; padding on both
    sides, and a crop (rows no output reads) at the bottom; gradients back in the input's layout."""
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(2, 5, 11, 13, generator=gen).to(dtype)
    x = {"nchw": base, "cl": _cl(base, dtype), "slice": _cl(torch.randn(2, 9, 11, 13, generator=gen), dtype)[:, 2:7]}[layout]
    s, top, left, height, width = 2, 2, 1, 12, 16          # rows: 2 + 11 -> crop to 12; cols 1 + 13 + 2
    y = kernels.space_to_depth(x, s, top, left, height, width)
    padded = F.pad(x.float(), (left, width - 13 - left, top, height - 11 - top))
    n, c = x.shape[:2]
    ref = padded.permute(0, 2, 3, 1).reshape(n, height // s, s, width // s, s * c).permute(0, 1, 3, 2, 4)
    ref = ref.reshape(n, height // s, width // s, s * s * c).permute(0, 3, 1, 2)
    assert y.is_contiguous(memory_format=CL) and torch.equal(y.float(), ref)
    g = torch.randn(y.shape, generator=gen).to(dtype)
    fmt = CL if layout == "cl" else torch.contiguous_format
    gx = kernels.space_to_depth_backward(g, tuple(x.shape), s, top, left, fmt)
    xr = x.float().clone().requires_grad_()
    padded = F.pad(xr, (left, width - 13 - left, top, height - 11 - top))
    r = padded.permute(0, 2, 3, 1).reshape(n, height // s, s, width // s, s * c).permute(0, 1, 3, 2, 4)
    r.reshape(n, height // s, width // s, s * s * c).permute(0, 3, 1, 2).backward(g.float())
    assert torch.equal(gx.float(), xr.grad) and gx.is_contiguous(memory_format=fmt)
    assert xr.grad[:, :, -1].abs().sum() == 0                 # the cropped row gets no gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("leak", [0.0, 0.1])
def test_pool_and_lrn_backward_apply_their_input_relus_rule_in_the_same_pass(dtype, leak):
    """maxpool3x3_backward(..., y, leak) and lrn_backward(..., relu_leak) equal the ReLU rule's
    backward after the plain one (bitwise at leak 0; else rounding only: the pool sums masked
    terms, and bf16 rounds leak * v once)."""
    gen = torch.Generator().manual_seed(6)
    x = _cl(torch.randn(2, 24, 13, 11, generator=gen).relu(), dtype)     # a ReLU's output: zeros
    y, idx = kernels.maxpool3x3(x, 2, (0, 1, 0, 1))
    g = _cl(torch.randn(y.shape, generator=gen), dtype)
    plain = kernels.maxpool3x3_backward(g, idx, (13, 11), 2, (0, 1, 0, 1))
    ref = torch.ops.aten.leaky_relu_backward(plain, x, leak, False)
    got = kernels.maxpool3x3_backward(g, idx, (13, 11), 2, (0, 1, 0, 1), y=y, leak=leak)
    torch.testing.assert_close(got, ref, rtol=0, atol=0 if leak == 0 else 1e-2 if dtype == torch.bfloat16 else 1e-6)
    assert (x == 0).any() and not torch.equal(got, plain)
    g2 = _cl(torch.randn(x.shape, generator=gen), dtype)
    plain = kernels.lrn_backward(x, g2, 9, 1e-2, 0.5, 1.0)
    got = kernels.lrn_backward(x, g2, 9, 1e-2, 0.5, 1.0, relu_leak=leak)
    ref = torch.ops.aten.leaky_relu_backward(plain, x, leak, False)
    if dtype == torch.bfloat16 and leak:      # one rounding of leak * v where torch rounds v first
        torch.testing.assert_close(got, ref, rtol=2 ** -7, atol=0)    # one bf16 ulp
    else:
        assert torch.equal(got, ref)


@pytest.mark.parametrize("din,dout", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                      (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize("layout", ["nchw", "cl"])
def test_space_to_depth_maps_and_casts_in_the_same_pass(din, dout, layout):
    """With a per-channel map x * scale + shift (a network's input normalization) and an output
    dtype: the map before the zero padding, one rounding to the output dtype; the gradient
    times scale, in the input's dtype and layout. Reference: float64."""
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 11, 13, generator=gen).to(din)
    x = _cl(x, din) if layout == "cl" else x
    scale, shift = torch.tensor([255.0, 4.5, -2.0]), torch.tensor([-117.0, 0.25, 1.5])
    s, top, left, height, width = 2, 2, 3, 14, 16
    y = kernels.space_to_depth(x, s, top, left, height, width, scale, shift, dout)
    xr = x.double().requires_grad_()
    mapped = xr * scale.double().view(1, 3, 1, 1) + shift.double().view(1, 3, 1, 1)
    padded = F.pad(mapped, (left, width - 13 - left, top, height - 11 - top))
    ref = padded.permute(0, 2, 3, 1).reshape(2, height // s, s, width // s, s * 3).permute(0, 1, 3, 2, 4)
    ref = ref.reshape(2, height // s, width // s, s * s * 3).permute(0, 3, 1, 2)
    assert y.dtype == dout and y.is_contiguous(memory_format=CL)
    assert torch.equal(y, ref.to(dout)) if dout == torch.float32 and din == torch.float32 else \
        float((y.double() - ref).abs().max()) <= float(ref.abs().max()) * 2 ** -8
    assert float(y.double()[:, :, 0].abs().max()) == 0            # the top rows: padding, 0 after the map
    g = torch.randn(y.shape, generator=gen).to(dout)
    ref.backward(g.double())
    gx = kernels.space_to_depth_backward(g, tuple(x.shape), s, top, left,
                                         CL if layout == "cl" else torch.contiguous_format, scale, din)
    assert gx.dtype == din and gx.is_contiguous(memory_format=CL if layout == "cl" else torch.contiguous_format)
    tol = 2 ** -23 if din == torch.float32 and dout == torch.float32 else 2 ** -8
    assert float((gx.double() - xr.grad).abs().max()) <= tol * float(xr.grad.abs().max())


def test_grid_sample_backward_matches_float64_and_render_uses_it():
    from vizsuite.optvis.transforms import warp_affine

    gen = torch.Generator().manual_seed(4)
    theta = torch.tensor([[1.3, 0.2, 0.15], [-0.2, 1.2, -0.1]]).repeat(3, 1, 1) * torch.tensor([0.8, 1.0, 1.25]).view(3, 1, 1)
    grid = F.affine_grid(theta, [3, 3, 40, 36], align_corners=True)    # some samples fall outside
    ref = torch.rand(3, 3, 23, 29, generator=gen, dtype=torch.float64).requires_grad_()
    g = torch.randn(3, 3, 40, 36, generator=gen)
    F.grid_sample(ref, grid.double(), mode="bilinear", padding_mode="zeros", align_corners=True).backward(g.double())
    got = kernels.grid_sample_backward(g, grid, (23, 29))
    assert float((got.double() - ref.grad).abs().max() / ref.grad.abs().max()) < 1e-5
    strided = kernels.grid_sample_backward(g.contiguous(memory_format=CL), grid, (23, 29))   # any strides
    assert torch.equal(strided, got)
    # the warp takes this path for a float32 image that needs a gradient, and gives torch's gradient
    img = ref.detach().float().requires_grad_()
    matrix = torch.tensor([[0.9, 0.1, 2.0], [-0.1, 1.1, -1.0]]).repeat(3, 1, 1)
    out = warp_affine(img, matrix, (40, 36))
    assert type(out.grad_fn).__name__ == "_GridSampleBackward"
    (a,) = torch.autograd.grad(out, img, g)
    ref2 = img.detach().double().requires_grad_()
    warp_affine(ref2, matrix.double(), (40, 36)).backward(g.double())
    assert float((a.double() - ref2.grad).abs().max() / ref2.grad.abs().max()) < 1e-5
