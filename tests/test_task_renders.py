"""Render task kinds: grouped objectives couple only their own images; shared task keys."""

from __future__ import annotations

import torch

from vizsuite.optvis import objectives as obj
from vizsuite.optvis.objectives import Context
from vizsuite.tasks.renders import DEFAULT_RECIPE, grouped, unit_render_task


def test_grouped_diversity_couples_only_its_own_set():
    torch.manual_seed(0)
    acts = torch.rand(6, 4, 5, 5)
    images = torch.rand(6, 3, 8, 8)
    groups = [range(0, 3), range(3, 6)]
    objective = grouped(lambda g: obj.diversity("l"), groups, "l", "test")
    base = objective(Context(images, {"l": acts}))
    changed = acts.clone()
    changed[3:] = torch.rand(3, 4, 5, 5)  # a different second set
    after = objective(Context(images, {"l": changed}))
    assert torch.allclose(base[:3], after[:3]) and not torch.allclose(base[3:], after[3:])
    # each set's values equal the plain diversity objective on that set alone
    alone = obj.diversity("l")(Context(images[:3], {"l": acts[:3]}))
    assert torch.allclose(base[:3], alone)


def test_unit_render_task_is_shared_by_recipe_defaults():
    a = unit_render_task("fp", "blocks.4", 3, seed=0)
    b = unit_render_task("fp", "blocks.4", 3, seed=0, recipe=dict(DEFAULT_RECIPE))
    c = unit_render_task("fp", "blocks.4", 3, seed=0, recipe={"steps": 7})
    assert a.key == b.key != c.key


def test_render_task_keys_name_the_resolved_precision(effnet):
    """"auto" is resolved before it enters the key: a bf16 render is never reused as fp32."""
    from vizsuite.optvis.render import model_precision
    from vizsuite.tasks.renders import _task_recipe

    auto = unit_render_task(effnet, "blocks.4", 3, seed=0)
    assert auto["recipe"]["precision"] == model_precision(effnet) in ("fp32", "bf16")
    fp32 = unit_render_task(effnet, "blocks.4", 3, seed=0, recipe={"precision": "fp32"})
    bf16 = unit_render_task(effnet, "blocks.4", 3, seed=0, recipe={"precision": "bf16"})
    assert fp32.key != bf16.key and auto.key in (fp32.key, bf16.key)
    # a task keyed before recipes named a precision was rendered in fp32, and still is
    old = dict(auto["recipe"])
    del old["precision"]
    assert _task_recipe({"recipe": old})["precision"] == "fp32"
