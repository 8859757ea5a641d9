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
