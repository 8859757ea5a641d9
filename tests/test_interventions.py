"""Causal interventions (issue 12): ground truths by construction.

The copy-unit model (tests/models/copy_unit_model.py) has a unit that class 0 uses and an exact,
unused copy of it; everything after the layer is linear, so every effect is known in closed form.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vizsuite.errors import UserError
from vizsuite.hooks import Hooks
from vizsuite.interventions import (ablation_effects, clamp, intervene, mean_ablate, naive_effects, patch,
                                    patch_positions, patch_sweep, reference_stats, resample_ablate, spearman, steer,
                                    zero_ablate)
from vizsuite.stream import ChannelStats, TopExamples, stream
from vizsuite.units import Dictionary, Directions, Unit, layer_units

from .cli_helpers import assert_bad_input, run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "models" / "copy_unit_model.py") + ":spec"
W_USED, USED, COPY = 2.5, 0, 1


def TINY_MODEL():
    from vizsuite.zoo import load_model

    return load_model(TINY)


@pytest.fixture(scope="module")
def tiny():
    return TINY_MODEL()


def _hooks_left(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _folder(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(path / f"i{i}.png")
    return path


def _load(folder: Path) -> torch.Tensor:
    from vizsuite.images import find_images, load_batch

    return load_batch(find_images(folder), 16, 1.0)


def _relu(model, x):
    with torch.no_grad():
        return torch.relu(model.net.conv(model.normalize(x)))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("imgs"), 6, 0)


# ---------------------------------------------------------------- ablation: used unit vs copy

def test_ablation_ranks_the_used_unit_first_and_the_copy_at_zero(tiny, images):
    fx = ablation_effects(tiny, "relu", images, target=0)
    x = _load(images)
    a = _relu(tiny, x)
    assert torch.equal(a[:, USED], a[:, COPY])  # identical activations on every input
    exact = -W_USED * a[:, USED].mean((1, 2)).double().numpy()
    assert fx.ranking("abs")[0] == USED
    assert np.allclose(fx.exact[:, USED], exact, atol=1e-5)
    assert np.allclose(fx.effect[USED], exact.mean(), atol=1e-5)
    assert np.abs(fx.exact[:, COPY]).max() < 1e-6 and np.abs(fx.exact[:, 2:]).max() < 1e-6
    assert np.isclose(fx.effect_std[USED], exact.std(), atol=1e-5)
    # linear above the layer: the first-order estimate is exact as well
    assert np.allclose(fx.estimate_per_image, fx.exact, atol=1e-5)
    # top-activation examples cannot tell the two apart
    top = TopExamples("relu", [Unit("relu", USED), Unit("relu", COPY)], k=4)
    stream(tiny, images, [top], progress=False)
    assert torch.equal(top.pos.images[0], top.pos.images[1])
    assert torch.equal(top.pos.values[0], top.pos.values[1])
    assert _hooks_left(tiny) == 0


def test_probability_and_unit_targets(tiny, images):
    x = _load(images)
    fx = ablation_effects(tiny, "relu", x, target=0, prob=True, fast=False)
    assert np.allclose(fx.exact, naive_effects(tiny, layer_units("relu", 4), x, 0, prob=True), atol=1e-6)
    assert fx.effect[USED] < 0 and abs(fx.effect[COPY]) < 1e-7
    # a target on the layer itself: ablating channel 2 changes unit relu:2 by minus its value
    fx = ablation_effects(tiny, "relu", x, target="relu:2")
    a = _relu(tiny, x)
    assert np.allclose(fx.exact[:, 2], -a[:, 2].mean((1, 2)).numpy(), atol=1e-5)
    assert np.abs(np.delete(fx.exact, 2, axis=1)).max() < 1e-7
    with pytest.raises(UserError, match="before layer relu"):
        ablation_effects(tiny, "relu", x, target="conv:0")


def test_positioned_units_and_dead_positions_match_the_naive_loop(tiny, images):
    """Every position of a ReLU channel as its own unit: zero positions (nothing changes, not run)
    read exactly 0; the rest equal one full forward per unit; mean ablation too."""
    x = _load(images)[:3]
    units = [Unit("relu", 2, y, xx) for y in range(16) for xx in range(16)]
    a = _relu(tiny, x)
    assert (a[:, 2] == 0).any() and (a[:, 2] > 0).any()
    fx = ablation_effects(tiny, units, x, target=1, chunk=50)
    naive = naive_effects(tiny, units, x, 1)
    assert np.abs(fx.exact - naive).max() < 1e-6
    dead = (a[:, 2] == 0).flatten(1).numpy()
    assert (fx.exact[dead] == 0).all() and (fx.estimate_per_image[dead] == 0).all()
    assert np.allclose(fx.exact, -(a[:, 2].flatten(1) / 256).numpy(), atol=1e-6)  # class 1 = mean of relu:2


# ---------------------------------------------------------------- patching

def test_patching_the_used_unit_restores_everything_the_copy_nothing(tiny, images):
    x = _load(images)
    with torch.no_grad():
        logits = tiny(x)[:, 0]
    src, dst = x[logits.argmax()][None], x[logits.argmin()][None]
    r = patch(tiny, src, dst, ["relu:0"], target=0)
    assert r.source_value - r.before > 0.1
    assert abs(r.restored - 1.0) < 1e-5 and abs(r.after - r.source_value) < 1e-5
    assert abs(patch(tiny, src, dst, ["relu:1"], target=0).restored) < 1e-5
    sweep = patch_sweep(tiny, src, dst, "relu", target=0)
    assert np.allclose(sweep.restored, [1.0, 0.0, 0.0, 0.0], atol=1e-5)
    # where the information sits: class 0 reads a spatial mean, so position fractions sum to 1 and
    # each equals that position's share of the source-destination difference
    heat = patch_positions(tiny, src, dst, "relu", target=0)
    a_s, a_d = _relu(tiny, src)[0, USED], _relu(tiny, dst)[0, USED]
    share = ((a_s - a_d) / (a_s - a_d).sum()).numpy()
    assert heat.restored.shape == (16, 16)
    assert np.isclose(heat.restored.sum(), 1.0, atol=1e-4) and np.allclose(heat.restored, share, atol=1e-5)
    only_copy = patch_positions(tiny, src, dst, "relu", target=0, units=["relu:1"])
    assert np.abs(only_copy.restored).max() < 1e-6
    assert _hooks_left(tiny) == 0


# ---------------------------------------------------------------- exactness on a real network

def test_exact_effects_equal_a_naive_loop_on_efficientnet(effnet, photos_dir):
    """blocks.5, 24 of its 192 channels (a full layer takes ~10 s here; the benchmark runs all), 2 photos."""
    from vizsuite.images import find_images, load_batch

    x = load_batch(find_images(photos_dir)[:2], effnet.input_size, effnet.spec.crop_pct)
    units = layer_units("blocks.5", 192)[::8]
    fx = ablation_effects(effnet, units, x, "top1", chunk=10)  # several chunks per image
    naive = naive_effects(effnet, units, x, "top1")
    assert np.abs(naive).max() > 1e-2
    assert np.abs(fx.exact - naive).max() < 1e-5
    assert fx.broadcast is True  # the batch-1-below shortcut was checked and used
    # a unit target above the layer, resample ablation (each photo takes the other's value)
    fx = ablation_effects(effnet, units[:6], x, "blocks.6:7", mode="resample")
    with torch.no_grad(), Hooks(effnet, ["blocks.5"]) as h:
        acts = h(x)["blocks.5"]
    naive = naive_effects(effnet, units[:6], x, "blocks.6:7", mode="resample", sources=acts.flip(0))
    assert np.abs(fx.exact - naive).max() < 1e-5
    assert _hooks_left(effnet) == 0


# ---------------------------------------------------------------- hooks never outlive a call

def test_no_hook_left_after_exceptions(tiny, images):
    x = _load(images)

    def boom(out):
        raise RuntimeError("edit failed")

    from vizsuite.hooks import Edit

    with pytest.raises(RuntimeError, match="edit failed"):
        with intervene(tiny, [zero_ablate(Unit("relu", 0)), Edit("relu", boom)]):
            assert _hooks_left(tiny) > 0
            tiny(x)
    assert _hooks_left(tiny) == 0
    with pytest.raises(UserError, match="out of range"):  # raises inside the engine's hooks
        ablation_effects(tiny, "relu", x, target=7, fast=False)
    with pytest.raises(UserError):
        patch(tiny, x[:1], x[1:2], ["relu:0"], target=9, fast=False)
    assert _hooks_left(tiny) == 0


# ---------------------------------------------------------------- mean ablation, edits of every kind

def test_mean_ablation_uses_the_reference_mean(tiny, images, tmp_path):
    ref = _folder(tmp_path / "ref", 5, 1)
    stats = reference_stats(tiny, ref, "relu")
    a_ref = _relu(tiny, _load(ref))
    assert torch.allclose(stats.mean.float(), a_ref.mean((0, 2, 3)), atol=1e-6)
    x = _load(images)
    with intervene(tiny, [mean_ablate(Unit("relu", 0), stats)], read=["relu"]) as h:
        got = h(x)["relu"]
    assert torch.allclose(got[:, 0], torch.full_like(got[:, 0], float(a_ref[:, 0].mean())), atol=1e-6)
    fx = ablation_effects(tiny, "relu", images, target=0, mode="mean", reference=ref)
    a = _relu(tiny, x)
    expected = W_USED * (a_ref[:, 0].mean() - a[:, 0].mean((1, 2))).double().numpy()
    assert np.allclose(fx.exact[:, USED], expected, atol=1e-5)
    # positioned unit: only that position takes the per-position reference mean
    with intervene(tiny, [mean_ablate(Unit("relu", 2, 3, 4), stats)], read=["relu"]) as h:
        got = h(x)["relu"]
    assert torch.allclose(got[:, 2, 3, 4], a_ref[:, 2, 3, 4].mean().expand(x.shape[0]), atol=1e-6)
    assert torch.equal(got[:, 2, 0], a[:, 2, 0])


def test_edits_on_every_unit_kind_compose_and_restore(tiny, images):
    x = _load(images)
    a = _relu(tiny, x)
    d = Directions(torch.tensor([[1.0, -1.0, 2.0, 0.5]]), name="d", layer="relu")
    k = Dictionary(torch.randn(3, 4, generator=torch.Generator().manual_seed(1)),
                   torch.randn(3, 4, generator=torch.Generator().manual_seed(2)), name="k", layer="relu")
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:8] = True
    edits = [zero_ablate(Unit("relu", 3), mask=mask),            # channel, spatial region
             steer(Unit("relu", 0, basis=d), 2.0),                 # direction: add 2 x its vector
             clamp(Unit("relu", 2), high=0.1),                     # clamp a channel
             zero_ablate(Unit("relu", 1, basis=k))]                # dictionary feature
    with intervene(tiny, edits, read=["relu"]) as h:
        got = h(x)["relu"]
    ref = a.clone()
    ref[:, 3, :8] = 0
    ref = ref + 2.0 * d.vectors[0].float().view(1, 4, 1, 1)
    c2 = ref[:, 2]
    ref = ref.clone()
    ref[:, 2] = c2.clamp(max=0.1)
    ref = k.set_feature(ref, 1, torch.tensor(0.0))  # the SAE edit: (0 - feature) x decoder row
    assert torch.allclose(got, ref, atol=1e-5)
    # resample: the unit reads its value on another image, at its position only
    with intervene(tiny, [resample_ablate(Unit("relu", 2, 5, 6), a[1:2])], read=["relu"]) as h:
        got = h(x)["relu"]
    assert torch.allclose(got[:, 2, 5, 6], a[1, 2, 5, 6].expand(x.shape[0]))
    assert torch.equal(got[:, :2], a[:, :2])
    assert _hooks_left(tiny) == 0
    with torch.no_grad():
        assert torch.allclose(tiny(x), tiny.net.head(a.mean((2, 3))), atol=1e-6)  # nothing left behind


def test_spearman_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 40).astype(float)
    b = a + rng.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, abs=1e-12)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


# ---------------------------------------------------------------- CLI

def test_cli_ablate_writes_csv_manifest_and_page(images, tmp_path):
    out = tmp_path / "abl"
    code, _, err = run_cli("ablate", TINY, "--layer", "relu", "--images", images, "--target", "uses-unit-0",
                           "-o", out, "--quiet")
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    items = m["items"]
    assert [it["unit"] for it in items][0] == "relu:0" and len(items) == 4
    for it in items:
        assert {"unit", "effect", "effect_std", "estimate", "images", "file"} <= set(it)
        assert it["images"] == 6
    copy = next(it for it in items if it["unit"] == "relu:1")
    assert abs(copy["effect"]) < 1e-6 and items[0]["effect"] < 0
    lines = (out / "effects.csv").read_text().splitlines()
    assert lines[0] == "rank,unit,effect,effect_std,estimate,images" and lines[1].startswith("1,relu:0,")
    html = (out / "report.html").read_text()
    assert "relu:0" in html and "http" not in html.replace("http-equiv", "")  # opens from file://, no network
    assert m["rank_correlation"] == pytest.approx(1.0)


def test_cli_patch_writes_before_after_restored_and_heatmap(images, tmp_path, tiny):
    x = _load(images)
    with torch.no_grad():
        logits = tiny(x)[:, 0]
    from vizsuite.images import find_images

    paths = find_images(images)
    src, dst = paths[int(logits.argmax())], paths[int(logits.argmin())]
    out = tmp_path / "p"
    code, _, err = run_cli("patch", TINY, "--units", "relu:0", "relu:1", "--source", src, "--dest", dst,
                           "--target", "0", "-o", out, "--quiet")
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["restored"] == pytest.approx(1.0, abs=1e-5) and m["after"] == pytest.approx(m["source_value"], abs=1e-5)
    assert {"before", "after", "restored"} <= set(m["items"][0])
    per_unit = {it["unit"]: it["restored"] for it in m["items"] if it["kind"] == "unit"}
    assert per_unit["relu:0"] == pytest.approx(1.0, abs=1e-5) and abs(per_unit["relu:1"]) < 1e-5
    heat = next(it for it in m["items"] if it["kind"] == "position_heatmap")
    assert (out / heat["file"]).is_file() and np.isclose(np.load(out / heat["array"]).sum(), 1.0, atol=1e-4)
    assert "heatmap_relu.png" in (out / "report.html").read_text()


def test_cli_bad_input_one_line_exit_2(images, tmp_path):
    out = tmp_path / "bad"
    base = ("ablate", TINY)
    assert_bad_input(*base, "--layer", "nope", "--images", images, "-o", out, contains="unknown layer")
    assert_bad_input(*base, "--layer", "relu", "--images", images, "--mode", "half", "-o", out, contains="--mode")
    assert_bad_input(*base, "--layer", "relu", "--images", tmp_path / "none", "-o", out, contains="not a folder")
    assert_bad_input(*base, "--layer", "relu", "--images", images, "--target", "7", "-o", out, contains="out of range")
    assert_bad_input(*base, "--units", "relu:9", "--images", images, "-o", out, contains="out of range")
    assert_bad_input(*base, "--units", "relu:1", "head:0", "--images", images, "-o", out, contains="one layer")
    assert_bad_input(*base, "--layer", "relu", "--units", "relu:1", "--images", images, "-o", out)
    assert_bad_input(*base, "--layer", "relu", "--images", images, "--target", "conv:0", "-o", out,
                     contains="before layer relu")
    img = next(images.iterdir())
    assert_bad_input("patch", TINY, "--units", "relu:x", "--source", img, "--dest", img, "-o", out,
                     contains="bad unit")
    assert_bad_input("patch", TINY, "--units", "relu:0", "--source", tmp_path / "missing.png", "--dest", img,
                     "-o", out)
    assert not out.exists()


def test_cli_ablate_resample_skips_unreadable_images(images, tmp_path):
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(images, folder)
    (folder / "a_broken.png").write_bytes(b"not a png")
    out = tmp_path / "res"
    code, _, err = run_cli("ablate", TINY, "--units", "relu:0", "relu:1", "--images", folder, "--target", "0",
                           "--mode", "resample", "-o", out, "--quiet")
    assert code == 0, err
    items = json.loads((out / "manifest.json").read_text())["items"]
    assert [it["unit"] for it in items] == ["relu:0", "relu:1"] and all(it["images"] == 6 for it in items)
    assert abs(items[1]["effect"]) < 1e-6 and items[0]["effect_std"] > 0
    fx = ablation_effects(TINY_MODEL(), ["relu:0"], folder, target=0)
    assert len(fx.images) == 6 and not any("broken" in n for n in fx.images)


def test_class_effects_equal_a_naive_loop_over_every_class(tiny, images):
    """What a unit does: the mean change of every class's probability equals one full forward
    per ablated unit; the used unit moves class 0, its exact copy moves nothing."""
    from vizsuite.interventions import class_effects

    x = _load(images)
    ce = class_effects(tiny, "relu", images, mode="mean")
    stats = reference_stats(tiny, images, "relu")
    with torch.no_grad():
        p0 = torch.softmax(tiny(x).double(), 1)
        naive = []
        for u in layer_units("relu", 4):
            with intervene(tiny, [mean_ablate(u, stats)]) as h:
                h(x)
                naive.append((torch.softmax(h.output.double(), 1) - p0).mean(0).numpy())
    assert np.allclose(ce.delta, np.stack(naive), atol=1e-6)
    assert np.allclose(ce.baseline, p0.mean(0).numpy(), atol=1e-6)
    assert np.abs(ce.delta[COPY]).max() < 1e-7 and np.abs(ce.delta[USED]).max() > 1e-3
    drops, rises = ce.top(USED, 2, "drop"), ce.top(USED, 2, "rise")
    assert all(d < 0 for _, d in drops) and all(r > 0 for _, r in rises)
    assert _hooks_left(tiny) == 0
