"""Unit descriptions (docs/describe.md): tuning curves recover planted orientations and hues,
descriptions are deterministic, a unit's own description simulates it better than another
unit's, concept AUROCs, the task kind and the CLI contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vizsuite.describe.engine import describe_layer
from vizsuite.describe.stimuli import stimulus_set
from vizsuite.describe.tuning import angle_diff, stimulus_responses, tuning_curves
from vizsuite.units import Directions, Unit, layer_units

from .cli_helpers import assert_bad_input, run_cli
from .models import describe_model as planted
from .optvis_helpers import ORIENTATIONS

MODEL = str(planted.__file__) + ":spec"


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return planted.model()


@pytest.fixture(scope="module")
def textures(tmp_path_factory):
    return planted.write_textures(tmp_path_factory.mktemp("tex"), 12, seed=0)


@pytest.fixture(scope="module")
def described(model, textures):
    return describe_layer(model, layer_units("relu", 14), images=textures, views=8, seed=0)


def test_planted_orientations_and_hues_are_recovered(model):
    """Every Gabor unit's preferred orientation within 11.25 deg of the planted one, every
    colour unit's preferred hue within 30 deg; all selective."""
    stimuli, resp = stimulus_responses(model, layer_units("relu", 14))
    assert len(stimuli) == len(stimulus_set(64)) and 200 <= len(stimuli) <= 400
    tunings, _ = tuning_curves(stimuli, resp)
    for u, planted_deg in enumerate(ORIENTATIONS):
        t = next(t for t in tunings[u] if t.family == "orientation")
        assert angle_diff(t.preferred, planted_deg, 180) <= 11.25, (u, t.preferred)
        assert t.selectivity > 0.5 and t.drive == 1.0
    for j, hue in enumerate(planted.HUES):
        t = next(t for t in tunings[8 + j] if t.family == "hue")
        assert angle_diff(t.preferred, hue, 360) <= 30, (hue, t.preferred)
        assert t.selectivity > 0.5 and t.drive == 1.0


def test_descriptions_name_the_planted_feature(described):
    for d in described[:8]:
        assert d.description.startswith("orientation-selective"), d.description
        assert 0 < d.confidence <= 1 and d.reasons
    for d in described[8:]:
        assert "colour, hue" in d.description, d.description
    item = described[0].item()
    assert {"unit", "description", "confidence", "tuning", "top_classes", "concepts"} <= set(item)
    assert {"preferred", "selectivity"} <= set(item["tuning"]["orientation"])


def test_descriptions_are_deterministic_under_a_seed(model, textures, described):
    from vizsuite.tasks.codec import to_json

    again = describe_layer(model, layer_units("relu", 14), images=textures, views=8, seed=0)
    assert to_json(again) == to_json(described)


def test_own_description_simulates_better_than_another_units(described):
    """Shuffled-label control: predicting a unit from another unit's description scores lower."""
    own = np.array([d.simulation.correlation for d in described])
    control = np.array([d.simulation.control for d in described])
    assert all(d.simulation.test > 0 and d.simulation.features for d in described)
    assert own.mean() > 0.6, own
    assert own.mean() > control.mean() + 0.2, (own.mean(), control.mean())


def test_concept_auroc_and_basis_units(model, tmp_path):
    """Concept: gratings near 90 deg vs random ones -> the 90 deg unit separates them; a
    direction equal to channel 2 gets channel 2's preferred orientation."""
    concept = planted.write_textures(tmp_path / "c90", 10, seed=1, angle=90.0)
    rnd = planted.write_textures(tmp_path / "rnd", 10, seed=2)
    vec = torch.zeros(1, 14)
    vec[0, 2] = 1.0
    basis = Directions(vec, name="d2", layer="relu")
    units = [Unit("relu", 4), Unit("relu", 0), Unit("relu", 0, basis=basis)]
    out = describe_layer(model, units, concepts={"vertical": concept}, random=rnd)
    auc = {d.unit: d.evidence.concepts[0].auroc for d in out}
    assert auc["relu:4"] > 0.7 and auc["relu:0"] < 0.5, auc
    assert "concept vertical" in out[0].description
    pref = out[2].evidence.family("orientation").preferred
    assert angle_diff(pref, 45.0, 180) <= 11.25


def test_cli_writes_descriptions_manifest_report_and_reuses_tasks(textures, tmp_path):
    out = tmp_path / "out"
    args = ["describe", MODEL, "--units", "relu:1", "relu:9", "relu:12", "--images", textures, "--views", "4",
            "--causal", "4", "-o", out, "--quiet"]
    code, _, err = run_cli(*args)
    assert code == 0, err
    data = json.loads((out / "descriptions.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert [i["unit"] for i in manifest["items"]] == ["relu:1", "relu:9", "relu:12"]
    item = manifest["items"][0]
    assert item["file"] == "descriptions.json" and item["description"] == data["items"][0]["description"]
    assert 0 <= item["confidence"] <= 1 and "orientation" in item["tuning"] and "relu" in manifest["layers"]
    assert isinstance(item["causal"], list)
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 3 * 5 and "relu:9" in html
    code, stdout, err = run_cli(*args[:-1])
    assert code == 0 and "3 reused" in stdout, (stdout, err)
    # one unit: no other unit's description to control with (null, not NaN, in the JSON)
    code, _, err = run_cli("describe", MODEL, "--units", "relu:2", "--images", textures, "--views", "2",
                           "--causal", "0", "-o", tmp_path / "one", "--quiet")
    assert code == 0, err
    item = json.loads((tmp_path / "one" / "descriptions.json").read_text())["items"][0]
    assert item["simulation"]["control"] is None and item["causal"] == []


@pytest.mark.parametrize("extra, contains", [
    (["--layers", "nope"], "unknown layer"),
    (["--units", "relu:99"], "out of range"),
    (["--layers", "relu", "--concept", "x=/nonexistent"], "not a folder"),
    (["--layers", "relu", "--concept", "bad"], "NAME=DIR"),
    (["--layers", "relu", "-k", "0"], "-k"),
    (["--layers", "relu", "--images", "/nonexistent"], "not a folder"),
    (["--layers", "relu", "--ray-address", "x:1"], "--executor ray"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, extra, contains):
    out = tmp_path / "o"
    assert_bad_input("describe", MODEL, *extra, "-o", out, contains=contains)
    assert not (out / "manifest.json").exists()


def test_concept_needs_random(tmp_path, textures):
    assert_bad_input("describe", MODEL, "--layers", "relu", "--concept", f"a={textures}", "-o", tmp_path / "o",
                     contains="--random")


def test_a_model_without_class_logits_gets_tuning_and_simulation_only(tmp_path):
    """No classifier (the optvis Gabor model outputs a feature map): no class or causal
    evidence, no error."""
    from vizsuite.tasks.describe import describe_layer as with_causal

    from .optvis_helpers import oriented_cnn

    images = planted.write_textures(tmp_path / "t", 6, seed=3)
    out = with_causal(oriented_cnn(64), layer_units("relu", 2), images=images, views=4, causal=2)
    assert [d.evidence.causal for d in out] == [[], []] and all(not d.evidence.top_classes for d in out)
    assert out[1].description.startswith("orientation-selective, 23°") and out[0].simulation.correlation > 0.5
