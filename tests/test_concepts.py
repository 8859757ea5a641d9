"""Concept probes, CAVs and TCAV (docs/concepts.md): ground truths by construction on planted
models (tests/models/concept_model.py), equality with captum's TCAV given the same CAVs, the
CLI contract (manifest keys, bad input), caching, generated concept folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_helpers import assert_bad_input, run_cli
from tests.models import concept_model as cm
from vizsuite.concepts import cosine, layer_vectors, probe, random_sets, tcav
from vizsuite.zoo import load_model

SPEC = str(Path(cm.__file__).resolve()) + ":spec"
NONLINEAR = str(Path(cm.__file__).resolve()) + ":nonlinear"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("concepts")
    return {"red": cm.write_images(root / "red", 12, seed=1, concept=True),
            "noise": cm.write_images(root / "noise", 12, seed=2),
            "pool": cm.write_images(root / "pool", 40, seed=3),
            "targets": cm.write_images(root / "targets", 8, seed=4),
            "root": root}


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


def _run(model, folders, **kw):
    kw.setdefault("runs", 10)
    return tcav(model, ["mid"], {"red": folders["red"], "noise": folders["noise"]}, [folders["pool"]],
                {0: folders["targets"], 1: folders["targets"]}, **kw)


def test_planted_direction_tcav_one_and_zero_both_significant(model, folders):
    res = _run(model, folders)
    d = cm.planted().numpy()
    red0, red1 = res.get("red", "mid", 0), res.get("red", "mid", 1)
    assert cosine(red0.cav, d) > 0.999                      # the CAV finds the planted direction
    assert red0.score == 1.0 and red0.score_std == 0.0      # every image's class-0 logit rises along it
    assert red1.score == 0.0                                # the opposite class: never
    assert red0.significant and red1.significant
    assert red0.accuracy == 1.0
    for c in (0, 1):                                        # a concept of random images is not significant
        noise = res.get("noise", "mid", c)
        assert not noise.significant and noise.p_value > 0.05
    assert res.tested == 4 and np.isclose(red0.p_value, min(1.0, 4 * red0.p_raw))   # Bonferroni
    assert red0.sensitivity.shape == (8, 10) and red0.per_image.tolist() == [1.0] * 8


@pytest.mark.parametrize("method", ["mean", "svm"])
def test_other_cav_backends_find_the_direction(model, folders, method):
    res = _run(model, folders, method=method)
    s = res.get("red", "mid", 0)
    assert s.score == 1.0 and res.get("red", "mid", 1).score == 0.0
    assert cosine(s.cav, cm.planted().numpy()) > (0.999 if method == "mean" else 0.7)


def test_same_seed_same_scores_and_cache_reuse(model, folders, tmp_path):
    a = _run(model, folders, seed=3, cache_dir=tmp_path)
    b = _run(model, folders, seed=3, cache_dir=tmp_path)
    assert all(p.computed == 0 for p in b.passes)            # everything came from the cache
    for s, t in zip(a.scores, b.scores):
        assert np.array_equal(s.runs, t.runs) and np.array_equal(s.null, t.null) and s.p_value == t.p_value
        assert np.array_equal(s.cav, t.cav)
    # another target class: the concept and random activations are not recomputed
    c = tcav(model, ["mid"], {"red": folders["red"], "noise": folders["noise"]}, [folders["pool"]],
             {2: folders["targets"]}, runs=10, seed=3, cache_dir=tmp_path)
    assert [p.computed for p in c.passes] == [0, 0, 0, 1]


def test_relative_cavs(model, folders):
    res = _run(model, folders, relative=True, runs=6)
    s = res.get("red-vs-noise", "mid", 0)
    assert s.relative and s.score == 1.0 and res.get("noise-vs-red", "mid", 0).score == 0.0
    assert res.tested == 2 * 4


def test_probe_accuracy_and_basis(model, folders, tmp_path):
    vec = {k: layer_vectors(model, sorted(folders[k].glob("*.png")), ["mid"]).result()["mid"]
           for k in ("red", "noise", "pool")}
    res = probe(vec["red"], vec["pool"], "red", "mid")
    assert all(res.accuracy(m) == 1.0 for m in ("logistic", "svm", "mean"))
    assert probe(vec["noise"], vec["pool"], "noise", "mid").accuracy("mean") < 0.9


def test_flat_representation_matches_pooled_ground_truth(model, folders):
    res = _run(model, folders, representation="flat", runs=6, method="mean")
    assert res.get("red", "mid", 0).score == 1.0 and res.get("red", "mid", 1).score == 0.0
    assert res.get("red", "mid", 0).cav.shape == (cm.C * 16 * 16,)


def test_tcav_passes_share_one_frozen_copy(model, folders, monkeypatch):
    """The concept, random and gradient passes of a run build the folded copy once, and its
    scores equal the unfolded model's."""
    import vizsuite.capture as capture

    built = []
    real = capture.inference_copy
    monkeypatch.setattr(capture, "inference_copy", lambda *a, **k: built.append(1) or real(*a, **k))
    capture._SHARED.pop(model.net, None)
    capture._SHARED.pop(model, None)
    fast = _run(model, folders, runs=4)
    assert len(fast.passes) == 4 and len(built) == 1
    slow = _run(model, folders, runs=4, fast=False)
    assert len(built) == 1
    for a, b in zip(fast.scores, slow.scores):
        np.testing.assert_allclose(a.runs, b.runs, atol=1e-6, rtol=0)
        np.testing.assert_allclose(a.sensitivity, b.sensitivity, rtol=1e-4, atol=1e-6)


def test_tcav_equals_captum_given_the_same_cavs(folders):
    """captum's TCAV with LayerGradientXActivation(multiply_by_inputs=False) on flattened
    activations, fed vizsuite's CAVs through a Classifier, gives the same sign-count scores
    (and the same mean directional derivatives) on a nonlinear model."""
    from captum.attr import LayerGradientXActivation
    from captum.concept import TCAV, Concept
    from captum.concept._utils.classifier import Classifier

    from vizsuite.images import load_batch

    model = load_model(NONLINEAR)
    layers = ["mid", "conv2"]
    rsets = random_sets([folders["pool"]], 4, 12, seed=0)
    target_paths = sorted(folders["targets"].glob("*.png"))
    res = tcav(model, layers, {"red": folders["red"]}, rsets, {3: target_paths}, representation="flat", seed=0)

    queue = []

    class Fixed(Classifier):
        """Hands captum the CAVs vizsuite trained, in captum's training order (set, layer)."""

        def __init__(self):
            self.cav, self.ids = None, None

        def train_and_eval(self, dataloader, **kwargs):
            self.cav, self.ids = queue.pop(0)
            return {"accs": torch.tensor(1.0)}

        def weights(self):
            w = torch.as_tensor(self.cav, dtype=torch.float64)
            return torch.stack([w, -w])

        def classes(self):
            return self.ids

    def batch(paths):
        return [load_batch(paths, 16, 1.0)]

    concept = Concept(0, "red", batch(sorted(folders["red"].glob("*.png"))))
    randoms = [Concept(i + 1, f"random{i}", batch(r.paths)) for i, r in enumerate(rsets)]
    n = len(rsets)
    sets = [[concept, r] for r in randoms] + [[randoms[i], randoms[(i + 1) % n]] for i in range(n)]
    s_by_layer = {layer: res.get("red", layer, 3) for layer in layers}
    for r in range(n):          # captum trains per experimental set, then per layer
        for layer in layers:
            queue.append((s_by_layer[layer].run_cavs[r], [0, r + 1]))
    for r in range(n):          # the random-vs-random sets
        for layer in layers:
            queue.append((s_by_layer[layer].null_cavs[r], [r + 1, (r + 1) % n + 1]))
    inputs = load_batch(target_paths, 16, 1.0)
    captum = TCAV(model.net, layers, classifier=Fixed(), save_path=str(folders["root"] / "captum_cav"),
                  layer_attr_method=LayerGradientXActivation(model.net, None, multiply_by_inputs=False))
    scores = captum.interpret(inputs, sets, target=3)
    checked = []
    for layer in layers:
        ours = s_by_layer[layer]
        theirs = np.array([float(scores[f"0-{r + 1}"][layer]["sign_count"][0]) for r in range(n)])
        mags = np.array([float(scores[f"0-{r + 1}"][layer]["magnitude"][0]) for r in range(n)])
        null = np.array([float(scores[f"{r + 1}-{(r + 1) % n + 1}"][layer]["sign_count"][0]) for r in range(n)])
        np.testing.assert_allclose(ours.runs, theirs, atol=1e-6, rtol=0)
        np.testing.assert_allclose(ours.null, null, atol=1e-6, rtol=0)
        np.testing.assert_allclose(ours.sensitivity.mean(0), mags, rtol=1e-4, atol=1e-6)
        checked.extend(ours.runs.tolist() + ours.null.tolist())
    assert any(0.0 < v < 1.0 for v in checked)      # not only all-or-nothing scores


# ---------------------------------------------------------------- CLI

def _tcav_args(folders, out, *extra):
    return ["tcav", SPEC, "--layers", "mid", "--concept", f"red={folders['red']}", "--concept",
            f"noise={folders['noise']}", "--random", str(folders["pool"]), "--target", "0", "--target", "class1",
            "--images", str(folders["targets"]), "--runs", "10", "--render-steps", "2", "--render-size", "32",
            "-o", str(out), "--quiet", *extra]


def test_cli_tcav_manifest_report_causal_check(folders, tmp_path, model):
    out = tmp_path / "out"
    code, stdout, err = run_cli(*_tcav_args(folders, out))
    assert code == 0, err
    man = json.loads((out / "manifest.json").read_text())
    keys = {"file", "concept", "layer", "target", "score", "score_std", "p_value", "significant", "accuracy", "cav",
            "ablation_effect"}
    assert all(set(i) == keys for i in man["items"])
    red = {i["target"]: i for i in man["items"] if i["concept"] == "red"}
    assert red[0]["score"] == 1.0 and red[0]["significant"] and red[1]["score"] == 0.0 and red[1]["significant"]
    # projecting the CAV v out of mid (pooled a = W mean(x)) changes logit 0 = d.a by
    # -(a.v)(d.v), logit 1 by +(a.v)(d.v): about minus the whole logit, as v is nearly d
    from vizsuite.images import load_batch

    x = load_batch(sorted(folders["targets"].glob("*.png")), 16, 1.0).double()
    a = x.mean((2, 3)) @ cm.weights().double().T
    v = torch.as_tensor(np.load(out / red[0]["cav"])["vectors"][0])
    d = cm.planted().double()
    expected = -float(((a @ v) * (d @ v)).mean())
    assert abs(red[0]["ablation_effect"] - expected) < 1e-4 and abs(red[1]["ablation_effect"] + expected) < 1e-4
    assert abs(expected + float((a @ d).mean())) < 0.02 * abs(expected)
    assert all(i["ablation_effect"] is None for i in man["items"] if not i["significant"])
    html = (out / "report.html").read_text()
    assert "directions/red__mid.png" in html and "examples/red/00.png" in html
    assert (out / "directions" / "red__mid.png").is_file() and (out / red[0]["file"]).is_file()
    # the CAV is a direction basis: LAYER/NAME:0 reads the projection on it
    from vizsuite.units import BasisSet, parse_unit

    u = parse_unit("mid/red:0", BasisSet.from_args([f"red={out / red[0]['cav']}"]))
    a = torch.randn(2, cm.C, 4, 4)
    v = torch.as_tensor(np.load(out / red[0]["cav"])["vectors"][0], dtype=torch.float32)
    assert torch.allclose(u.value(a), torch.einsum("nchw,c->n", a, v) / 16, atol=1e-5)
    # and ablate takes it
    code, _, err = run_cli("ablate", SPEC, "--units", "mid/red:0", "--basis", f"red={out / red[0]['cav']}",
                           "--images", str(folders["targets"]), "--target", "0", "-o", str(tmp_path / "abl"),
                           "--quiet")
    assert code == 0, err


def test_cli_probe_table_plot(folders, tmp_path):
    out = tmp_path / "probe"
    code, stdout, err = run_cli("probe", SPEC, "--layers", "mid", "--concept", f"red={folders['red']}",
                                "--concept", f"noise={folders['noise']}", "--random", str(folders["pool"]),
                                "-o", str(out))
    assert code == 0, err
    assert "logistic" in stdout and "red" in stdout
    assert (out / "probe.svg").read_text().startswith("<svg")
    man = json.loads((out / "manifest.json").read_text())
    acc = {(i["concept"], i["method"]): i["accuracy"] for i in man["items"]}
    assert acc[("red", "logistic")] == 1.0 and acc[("red", "mean")] == 1.0
    assert "probe.svg" in (out / "report.html").read_text()


def test_cli_bad_input(folders, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    few = cm.write_images(tmp_path / "few", 2, seed=9, concept=True)
    base = _tcav_args(folders, tmp_path / "o")
    bad = [
        (["--concept", f"x={empty}"], "no images"),
        (["--concept", f"x={few}"], "needs at least"),
        (["--concept", f"x={tmp_path / 'missing'}"], "not found"),
        (["--concept", "nodir"], "NAME=DIR"),
    ]
    for extra, msg in bad:
        assert_bad_input(*base, *extra, contains=msg)
    def swap(flag, value):
        args = list(base)
        args[args.index(flag) + 1] = value
        return args
    assert_bad_input(*swap("--target", "notaclass"), contains="notaclass")
    assert_bad_input(*swap("--target", "10"), contains="out of range")
    assert_bad_input(*swap("--layers", "mdi"), contains="unknown layer")
    assert_bad_input(*swap("--runs", "1"), contains="--runs")
    assert_bad_input(*swap("--random", str(empty)), contains="no images")
    assert_bad_input("probe", SPEC, "--layers", "mid", "--concept", f"red={folders['red']}", "-o",
                     str(tmp_path / "p"), contains="--random")
    assert_bad_input("concepts", "make", str(tmp_path / "c"), "--only", "stripez", contains="stripes")
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()


def test_concepts_make_seeded(tmp_path):
    code, _, err = run_cli("concepts", "make", str(tmp_path / "a"), "--count", "3", "--random-count", "4",
                           "--size", "32", "--quiet")
    assert code == 0, err
    code, _, err = run_cli("concepts", "make", str(tmp_path / "b"), "--count", "3", "--random-count", "4",
                           "--size", "32", "--quiet", "--only", "dots,zigzag")
    assert code == 0, err
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    names = {i["concept"] for i in man["items"]}
    assert {"stripes_0", "stripes_45", "stripes_90", "stripes_135", "dots", "checkerboard", "zigzag", "red",
            "random"} <= names
    assert len(list((tmp_path / "a" / "random").glob("*.png"))) == 4
    for name in ("dots", "zigzag"):   # same seed, same pixels; other concepts do not shift them
        for f in sorted((tmp_path / "a" / name).glob("*.png")):
            assert f.read_bytes() == (tmp_path / "b" / name / f.name).read_bytes()
    assert not list((tmp_path / "a").glob(".*"))   # no staging folder left


def test_spatial_concept_reads_inside_the_mask(model, folders, tmp_path):
    """Image + mask pairs: the concept (the planted colour) covers the top-left quadrant only;
    the pooled vector is the layer's mean inside the mask, exactly W x the mean pixel there."""
    from PIL import Image

    from vizsuite.concepts import concept_from_folder

    rng = np.random.default_rng(5)
    d = tmp_path / "spatial"
    d.mkdir()
    pixels = []
    for i in range(8):
        img = rng.uniform(0, 0.5, (16, 16, 3)).astype(np.float32)
        img[:8, :8] += cm.CONCEPT_RGB
        q = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(q).save(d / f"s{i}.png")
        mask = np.zeros((16, 16), np.uint8)
        mask[:8, :8] = 255
        Image.fromarray(mask).save(d / f"s{i}_mask.png")
        pixels.append(q[:8, :8].reshape(-1, 3).astype(np.float64).mean(0) / 255)
    c = concept_from_folder("corner", d)
    assert len(c) == 8 and all(m is not None for m in c.masks)
    vec = layer_vectors(model, c.paths, ["mid"], masks=c.masks).result()["mid"]
    expected = np.stack(pixels) @ cm.weights().double().numpy().T
    np.testing.assert_allclose(vec, expected, atol=1e-5)
    res = tcav(model, ["mid"], {"corner": c}, [folders["pool"]], {0: folders["targets"], 1: folders["targets"]},
               runs=10)
    assert res.get("corner", "mid", 0).score == 1.0 and res.get("corner", "mid", 0).significant
    assert cosine(res.get("corner", "mid", 0).cav, cm.planted().numpy()) > 0.99
