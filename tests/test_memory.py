"""keep_freed_memory: a render loop stops page-faulting its activations in again every step."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vizsuite import memory

CHILD = r"""
import contextlib, json, resource, sys
import torch
from torch import nn
torch.set_num_threads(1)
import vizsuite.optvis.render  # noqa
render_module = sys.modules["vizsuite.optvis.render"]
from vizsuite.optvis import channel, render
if sys.argv[1] == "off":
    render_module.keep_freed_memory = contextlib.nullcontext
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 48, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(48, 4, 3, padding=1))
render(model, channel("4", 0), size=160, steps=2, progress=False)  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
render(model, channel("4", 0), size=160, steps=12, progress=False)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(memory._LIBC is None, reason="glibc malloc only")
def test_render_reuses_freed_memory_instead_of_faulting_it_in_every_step():
    # each step allocates ~20 MB of activations and gradients; by default glibc trims the freed
    # heap top after every step, so every step faults it in again (a new process per mode:
    # mallopt settings cannot be undone within one)
    off, on = _faults("off"), _faults("on")
    assert on < off / 3, (on, off)


def test_nesting_and_exit_restore_the_depth():
    with memory.keep_freed_memory(), memory.keep_freed_memory():
        assert memory._depth == (2 if memory._LIBC is not None else 0)
    assert memory._depth == 0
