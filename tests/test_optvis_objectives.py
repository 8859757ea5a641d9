"""Objectives: arithmetic, descriptions, declared inputs, batch-awareness."""

from __future__ import annotations

import pytest
import torch

from vizsuite.errors import UserError
from vizsuite.optvis import objectives as O
from vizsuite.optvis.objectives import Context


def ctx_from(acts, images=None, logits=None):
    n = next(iter(acts.values())).shape[0] if acts else images.shape[0]
    images = torch.rand(n, 3, 8, 8) if images is None else images
    return Context(images, acts, logits)


def test_descriptions_read_like_code():
    assert str(0.5 * O.channel("blocks.4", 3) - O.diversity("blocks.4")) == \
        '0.5 * channel("blocks.4", 3) - diversity("blocks.4")'
    a, b, c = O.channel("l", 1), O.neuron("l", 2), O.layer("m")
    assert str(a - (b - c)) == 'channel("l", 1) - (neuron("l", 2) - layer("m"))'
    assert str(a - b - c) == 'channel("l", 1) - neuron("l", 2) - layer("m")'
    assert str(-(a + b)) == '-(channel("l", 1) + neuron("l", 2))'
    assert str((a + b) * 2) == '(channel("l", 1) + neuron("l", 2)) * 2'
    assert str(a / 4 + 1) == 'channel("l", 1) / 4 + 1'
    assert str(O.neuron("l", 2, 3, 4, batch=1)) == 'neuron("l", 2, y=3, x=4, batch=1)'
    assert str(O.class_logprob(281)) == "class_logprob(281)"
    assert str(O.total_variation() * 1e-3) == "total_variation() * 0.001"
    assert str(O.per_image([a, b])) == 'per_image([channel("l", 1), neuron("l", 2)])'


def test_arithmetic_values():
    acts = {"l": torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)}
    ctx = ctx_from(acts)
    ch = O.channel("l", 1)
    assert torch.equal(ch(ctx), acts["l"][:, 1].mean((1, 2)))
    nr = O.neuron("l", 2)  # centre of 2 x 2 is (1, 1)
    assert torch.equal(nr(ctx), acts["l"][:, 2, 1, 1])
    assert torch.allclose((ch + nr)(ctx), ch(ctx) + nr(ctx))
    assert torch.allclose((ch - 2 * nr)(ctx), ch(ctx) - 2 * nr(ctx))
    assert torch.allclose((ch / nr)(ctx), ch(ctx) / nr(ctx))
    assert torch.allclose((-ch)(ctx), -ch(ctx))
    assert torch.allclose((1 - ch)(ctx), 1 - ch(ctx))
    assert torch.allclose((3 / ch)(ctx), 3 / ch(ctx))
    assert torch.allclose(O.layer("l")(ctx), acts["l"].pow(2).flatten(1).mean(1))
    v = torch.tensor([0.0, 1.0, 0.0])
    assert torch.allclose(O.direction("l", v)(ctx), ch(ctx))
    # cosine weighting only shrinks (cos <= 1) and keeps the sign
    assert (O.direction("l", v, cossim_power=1)(ctx) <= ch(ctx) + 1e-6).all()


def test_declared_layers_and_logits():
    obj = O.channel("a", 1) + 0.5 * O.neuron("b", 2) - O.diversity("a") - O.total_variation()
    assert obj.layers == ("a", "b")
    assert not obj.needs_logits
    assert (obj + O.class_logit(3)).needs_logits
    assert O.l1().layers == () and not O.l1().needs_logits


def test_class_objectives():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    ctx = ctx_from({}, images=torch.rand(2, 3, 4, 4), logits=logits)
    assert torch.equal(O.class_logit(2)(ctx), logits[:, 2])
    assert torch.allclose(O.class_logprob(2)(ctx), torch.log_softmax(logits, 1)[:, 2])
    with pytest.raises(UserError):
        O.class_logit(5)(ctx)


def test_diversity_and_alignment():
    same = torch.rand(1, 4, 5, 5).expand(3, -1, -1, -1)
    ctx = ctx_from({"l": same})
    assert torch.allclose(O.diversity("l")(ctx), torch.ones(3))  # identical styles: similarity 1
    assert torch.allclose(O.alignment("l")(ctx), torch.zeros(3))
    torch.manual_seed(0)
    ctx2 = ctx_from({"l": torch.randn(3, 4, 5, 5)})
    assert (O.diversity("l")(ctx2) < 1).all()
    assert (O.alignment("l")(ctx2) > 0).all()
    assert torch.equal(O.diversity("l")(ctx_from({"l": torch.rand(1, 4, 5, 5)})), torch.zeros(1))


def test_regularizers():
    flat = torch.full((2, 3, 6, 6), 0.5)
    ctx = ctx_from({}, images=flat)
    for reg in (O.total_variation(), O.l1(), O.blur()):
        assert torch.allclose(reg(ctx), torch.zeros(2), atol=1e-6)
    assert torch.allclose(O.l2()(ctx), torch.full((2,), 1e-3), atol=1e-4)
    noisy = ctx_from({}, images=torch.rand(2, 3, 6, 6))
    for reg in (O.total_variation(), O.l1(), O.l2(), O.blur()):
        assert (reg(noisy) > 0).all()
    rgba = torch.cat([torch.rand(2, 3, 6, 6), torch.full((2, 1, 6, 6), 0.25)], 1)
    assert torch.allclose(O.alpha_mean()(ctx_from({}, images=rgba)), torch.full((2,), 0.25))
    assert torch.equal(O.alpha_mean()(noisy), torch.zeros(2))


def _grads(obj, n=4):
    """Gradient of obj's summed value w.r.t. each of n input images, through a conv layer."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.rand(n, 3, 8, 8, requires_grad=True)
    ctx = Context(x, {"l": conv(x)})
    obj(ctx).sum().backward()
    return x.grad.flatten(1).abs().sum(1)


def test_batch_argument_sends_gradient_only_into_its_image():
    g = _grads(O.channel("l", 2, batch=1))
    assert g[1] > 0 and g[0] == 0 and g[2] == 0 and g[3] == 0
    g = _grads(O.total_variation(batch=3))
    assert g[3] > 0 and g[:3].sum() == 0
    g = _grads(O.channel("l", 2).on(2))
    assert g[2] > 0 and g[[0, 1, 3]].sum() == 0


def test_per_image_objective_i_only_moves_image_i():
    parts = [O.channel("l", 0), O.neuron("l", 1), O.layer("l"), O.channel("l", 4)]
    stacked = O.per_image(parts)
    for i in range(4):
        # gradient of the stacked objective's i-th value reaches image i alone
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        x = torch.rand(4, 3, 8, 8, requires_grad=True)
        values = stacked(Context(x, {"l": conv(x)}))
        values[i].backward()
        g = x.grad.flatten(1).abs().sum(1)
        assert g[i] > 0
        assert g.sum() == g[i]
        assert torch.allclose(values[i].detach(), parts[i](Context(x, {"l": conv(x)}))[i])


def test_errors_are_user_errors():
    ctx = ctx_from({"l": torch.rand(2, 3, 4, 4)})
    with pytest.raises(UserError):
        O.channel("l", 7)(ctx)
    with pytest.raises(UserError):
        O.channel("missing", 0)(ctx)
    with pytest.raises(UserError):
        O.channel("l", 0, batch=5)(ctx)
    with pytest.raises(UserError):
        O.per_image([O.channel("l", 0)] * 3)(ctx)
    with pytest.raises(UserError):
        O.direction("l", torch.ones(4))(ctx)


def test_per_image_of_units_reads_each_image_alone_with_the_same_values_and_gradients():
    """per_image over unit objectives takes the row-wise path (one unbind per layer); mixing in
    another objective takes the generic one. Both give the same values and gradients."""
    gen = torch.Generator().manual_seed(0)
    base = {"l": torch.randn(4, 6, 5, 5, generator=gen), "m": torch.randn(4, 3, 2, 2, generator=gen)}
    parts = [O.channel("l", 1), O.neuron("l", 2), O.neuron("l", 0, 1, 3), O.channel("m", 2)]
    assert all(p.unit is not None for p in parts) and O.channel("l", 1, batch=0).unit is None
    results = []
    for objs in (parts, parts[:3] + [O.channel("m", 2) * 1.0]):        # row-wise, generic
        acts = {k: v.clone().requires_grad_() for k, v in base.items()}
        values = O.per_image(objs)(ctx_from(acts))
        values.sum().backward()
        results.append((values.detach(), acts["l"].grad, acts["m"].grad))
    (v0, gl0, gm0), (v1, gl1, gm1) = results
    assert torch.allclose(v0, v1) and torch.allclose(gl0, gl1) and torch.allclose(gm0, gm1)
    expected = torch.stack([base["l"][0, 1].mean(), base["l"][1, 2, 2, 2], base["l"][2, 0, 1, 3],
                            base["m"][3, 2].mean()])
    assert torch.allclose(v0, expected)
    assert gl0[3].abs().sum() == 0 and gm0[:3].abs().sum() == 0     # image i feeds unit i only
