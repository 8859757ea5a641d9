"""Dataset examples (planted features, bounded memory, real photos) and receptive fields."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vizsuite.analysis import examples as D
from vizsuite.analysis.receptive import receptive_field, receptive_fields
from vizsuite.zoo.spec import ModelSpec, VisionModel


def wrap(net: nn.Module, size: int) -> VisionModel:
    spec = ModelSpec("tiny", builder=lambda: net, input_size=size, crop_pct=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    model = VisionModel(net, spec).eval()
    model.requires_grad_(False)
    return model


def colour_detector() -> VisionModel:
    """Layer '0': unit 0 = red detector (R - (G+B)/2 over 5x5), unit 1 = green detector."""
    net = nn.Sequential(nn.Conv2d(3, 2, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(2, 3))
    with torch.no_grad():
        net[0].bias.zero_()
        w = torch.full((2, 3), -0.5)
        w[0, 0] = w[1, 1] = 1.0
        net[0].weight.copy_(w.view(2, 3, 1, 1).expand(2, 3, 5, 5) / 25)
    return wrap(net, 32)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """24 grey noise images; red squares planted in 3, green squares in 3 others."""
    folder = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    red, green = {3, 11, 19}, {5, 13, 21}
    for i in range(24):
        img = np.clip(0.4 + 0.05 * rng.standard_normal((32, 32, 3)), 0, 1)
        if i in red:
            img[6:12, 18:24] = (1.0, 0.0, 0.0)
        if i in green:
            img[20:26, 4:10] = (0.0, 1.0, 0.0)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder, red, green


def test_planted_features_are_the_top_examples(planted, tmp_path):
    folder, red, green = planted
    model = colour_detector()
    ex = D.dataset_examples(model, ["0"], folder, tmp_path / "cache", k=3, batch_size=5, crop_px=20,
                            progress=False)["0"]
    name = lambda i: int(ex.images[i][-6:-4])  # noqa: E731
    assert {name(i) for i in ex.pos_image[0]} == red  # red detector: red images on top
    assert {name(i) for i in ex.neg_image[0]} == green  # ... and most negative on green ones
    assert {name(i) for i in ex.pos_image[1]} == green
    assert {name(i) for i in ex.neg_image[1]} == red
    assert np.all(np.diff(ex.pos_value[0]) <= 0) and np.all(np.diff(ex.neg_value[0]) >= 0)
    assert ex.pos_value[0].min() > 0.5 and ex.neg_value[0].max() < -0.2
    for y, x in ex.pos_yx[0]:  # the max sits where the square is (5x5 field fully inside it)
        assert 6 <= y < 12 and 18 <= x < 24
    assert (ex.rf.size, ex.rf.jump) == (5, 1)
    crop = ex.pos_crops[0, 0].astype(float)  # the crop shows the planted red
    assert crop.shape == (20, 20, 3) and crop[..., 0].mean() > 200 and crop[..., 1].mean() < 60
    # memory bounded by k: k entries per unit, whatever the number of images
    assert ex.pos_value.shape == ex.neg_value.shape == (2, 3) and ex.pos_crops.shape[:2] == (2, 3)
    files = ex.save_crops(0, tmp_path / "crops")
    assert [r["value"] for r in files["pos"]] == pytest.approx(ex.pos_value[0].tolist())
    assert all((tmp_path / "crops" / r["file"]).is_file() for r in files["pos"] + files["neg"])


def test_cache_is_reused(planted, tmp_path, monkeypatch):
    from vizsuite import stream as S

    folder, red, _ = planted
    model = colour_detector()
    first = D.dataset_examples(model, ["0"], folder, tmp_path, k=2, progress=False)["0"]

    def boom(*a, **k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(S, "image_batches", boom)  # the streaming pass must not run again
    again = D.dataset_examples(model, ["0"], folder, tmp_path, k=2, progress=False)["0"]
    assert np.array_equal(first.pos_image, again.pos_image) and np.array_equal(first.pos_crops, again.pos_crops)
    with pytest.raises(AssertionError):  # a different k is a different cache entry
        D.dataset_examples(model, ["0"], folder, tmp_path, k=3, progress=False)
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_topk_keeps_k_entries():
    gen = torch.Generator().manual_seed(0)
    from vizsuite.stream import TopK

    top = TopK(units=4, k=5)
    everything = []
    for b in range(30):
        vals = torch.randn(7, 4, generator=gen)
        everything.append(vals)
        top.update(vals, torch.arange(b * 7, b * 7 + 7), torch.zeros(7, 4, 2, dtype=torch.long))
        assert top.values.shape == top.images.shape == (4, 5) and top.yx.shape == (4, 5, 2)
    allv = torch.cat(everything)
    expected = allv.t().topk(5, dim=1)
    assert torch.equal(top.values, expected.values) and torch.equal(top.images, expected.indices)


def test_receptive_field_of_known_cnn_is_analytic():
    # conv3 s1 p1 -> conv3 s2 p1 -> maxpool2 s2 -> conv3 s1 p1; analytic (size, jump, offset):
    # (3,1,0) -> (5,2,0) -> (7,4,1) -> (15,4,1). In-place ReLUs and the max pool must not matter.
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(),
                        nn.MaxPool2d(2, 2), nn.Conv2d(4, 4, 3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = wrap(net, 64)
    rfs = receptive_fields(model, ["0", "2", "4", "5", "7"])
    got = {k: (v.size, v.jump, v.offset) for k, v in rfs.items() if v.spatial}
    assert got == {"0": (3, 1, 0.0), "2": (5, 2, 0.0), "4": (7, 4, 1.0), "5": (15, 4, 1.0)}
    assert not rfs["5"].clipped and not rfs["7"].spatial
    assert rfs["5"].box(2, 3, 64) == (2, 6, 15)  # centre (9, 13), 15 wide
    assert receptive_field(model, "5") == rfs["5"]  # cached
    assert all(not hasattr(m, "forward") or "forward" not in vars(m) for m in net.modules())  # restored


@pytest.mark.slow
def test_efficientnet_photos(effnet, photos_dir, tmp_path):
    ex = D.dataset_examples(effnet, ["blocks.2"], photos_dir, tmp_path, k=3, units={"blocks.2": [0, 7, 20]},
                            crop_px=32, progress=False)["blocks.2"]
    assert ex.units == [0, 7, 20] and len(ex.images) == 8
    assert ex.pos_value.shape == (3, 3) and ex.pos_crops.shape == (3, 3, 32, 32, 3)
    assert (ex.rf.size, ex.rf.jump) == (67, 8) and not ex.rf.clipped
    assert np.all(ex.pos_value[:, 0] >= ex.neg_value[:, 0])
    assert len({int(i) for i in ex.pos_image[0]}) == 3  # three different photos
    assert ex.pos_crops.std() > 10  # real photo content, not blank
    ex.save(tmp_path / "saved" / "examples.npz")
    loaded = D.DatasetExamples.load(tmp_path / "saved" / "examples.npz")
    assert np.array_equal(loaded.pos_value, ex.pos_value) and loaded.rf == ex.rf
