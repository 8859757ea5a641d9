"""Task model: stable content hashes, reuse, resume after crashes, no partial files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vizsuite.tasks import (Task, TaskError, TaskStore, make_task, model_fingerprint, register_task,
                            run_tasks)

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------- task functions (module level)

@register_task("test_square")
def square_task(task, ctx):
    """Writes its answer slowly in two halves so a crash can land mid-file."""
    n = task["n"]
    out = ctx.path("value.txt")
    with open(out, "w") as fh:
        fh.write("value=")
        fh.flush()
        if os.environ.get("VIZ_TEST_CRASH_AT") == str(n):
            os._exit(137)  # like kill -9 in the middle of a write
        time.sleep(float(os.environ.get("VIZ_TEST_DELAY", "0")))
        fh.write(str(n * n))
    ctx.path("sub/extra.json").write_text(json.dumps({"n": n}))
    return {"square": n * n, "pid": os.getpid()}


@register_task("test_fail")
def fail_task(task, ctx):
    ctx.path("junk.txt").write_text("partial")
    if task["n"] == 2:
        raise ValueError("planted failure")
    if task["n"] == 3:
        raise KeyboardInterrupt
    return {"n": task["n"]}


def square_tasks(count: int) -> list[Task]:
    return [make_task("test_square", n=i, recipe={"steps": 3, "lr": 0.05}, seed=0) for i in range(count)]


def _main(cache: str, count: int) -> None:  # entry point of the subprocess builds below
    report = run_tasks(square_tasks(count), cache, progress=False)
    print(json.dumps({"computed": report.computed, "reused": report.reused}))


def run_build_subprocess(cache: Path, count: int, **env) -> subprocess.Popen:
    code = (f"import sys; sys.path.insert(0, {str(HERE.parent)!r}); import tests.test_tasks as T; "
            f"T._main({str(cache)!r}, {count})")
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cache_state(cache: Path) -> dict:
    """{key: {file: content}} of every finished result (done markers excluded)."""
    out = {}
    for d in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out[d.name] = {str(f.relative_to(d)): f.read_text() for f in sorted(d.rglob("*"))
                       if f.is_file() and f.name != "done.json"}
    return out


def leftovers(cache: Path) -> list[str]:
    return [str(p) for p in cache.rglob("*") if p.name.endswith(".part")]


# ----------------------------------------------------------------- hashing

def test_key_is_stable_and_normalized():
    t = make_task("render_unit", model="abc", layer="blocks.4", unit=3, technique="fft",
                  recipe={"steps": 256, "lr": 0.05, "transforms": ("jitter", 8)}, seed=0)
    # a fixed value: changing it invalidates every user's cache, so it must be deliberate
    assert t.key == "5b807c567b1e9ff6295b47c755ecf9a3"
    same = Task("render_unit", {"seed": 0, "unit": 3, "layer": "blocks.4", "technique": "fft", "model": "abc",
                                "recipe": {"transforms": ["jitter", 8], "lr": 0.05, "steps": 256}})
    assert same.key == t.key and same == t and len({t, same}) == 1


@pytest.mark.parametrize("change", [
    {"kind": "render_diversity"}, {"model": "abd"}, {"layer": "blocks.5"}, {"unit": 4},
    {"technique": "pixel"}, {"recipe": {"steps": 257, "lr": 0.05, "transforms": ["jitter", 8]}},
    {"recipe": {"steps": 256, "lr": 0.05, "transforms": ["jitter", 9]}}, {"seed": 1}, {"extra": None},
])
def test_key_changes_with_every_field(change):
    base = dict(model="abc", layer="blocks.4", unit=3, technique="fft",
                recipe={"steps": 256, "lr": 0.05, "transforms": ["jitter", 8]}, seed=0)
    kind = change.pop("kind", "render_unit")
    assert make_task(kind, **{**base, **change}).key != make_task("render_unit", **base).key


def test_params_must_be_json():
    with pytest.raises(TypeError):
        make_task("x", obj=object())
    with pytest.raises(ValueError):
        make_task("x", v=float("nan"))


def test_register_rejects_local_functions():
    with pytest.raises(ValueError):
        register_task("bad", lambda task, ctx: None)


def test_model_fingerprint_cached_sensitive_and_not_on_module():
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    before = set(vars(net))
    fp = model_fingerprint(net)
    assert fp == model_fingerprint(net) and set(vars(net)) == before
    twin = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    twin.load_state_dict(net.state_dict())
    assert model_fingerprint(twin) == fp
    other_arch = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU())
    other_arch.load_state_dict(net.state_dict())
    assert model_fingerprint(other_arch) != fp
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1e-3  # in place: the cache must notice
    assert model_fingerprint(net) != fp


# ----------------------------------------------------------------- executing and reusing

def test_rerun_reuses_everything(tmp_path):
    tasks = square_tasks(5)
    first = run_tasks(tasks, tmp_path, progress=False)
    assert (first.computed, first.reused) == (5, 0)
    assert first.result(tasks[3]).path("value.txt").read_text() == "value=9"
    assert first.result(tasks[3]).meta["square"] == 9
    again = run_tasks(tasks + square_tasks(7), tmp_path, progress=False)
    assert (again.computed, again.reused) == (2, 5)
    assert again.result(tasks[3]).meta["square"] == 9 and not again.result(tasks[3]).computed
    assert "2 computed, 5 reused" in again.summary()


def test_failures_keep_other_results_and_leave_nothing_partial(tmp_path):
    tasks = [make_task("test_fail", n=i) for i in (0, 1, 2)]
    with pytest.raises(TaskError, match="1 of 3 tasks failed"):
        run_tasks(tasks, tmp_path, progress=False)
    store = TaskStore(tmp_path)
    assert [store.is_done(t) for t in tasks] == [True, True, False]
    assert not store.dir(tasks[2]).exists() and leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C inside a task: propagates, cleans up
        run_tasks([make_task("test_fail", n=3)], tmp_path, progress=False)
    assert leftovers(tmp_path) == [] and sorted(os.listdir(tmp_path)) == sorted(t.key for t in tasks[:2])


def test_pool_matches_in_process(tmp_path):
    tasks = square_tasks(6)
    clean = run_tasks(tasks, tmp_path / "a", progress=False)
    pooled = run_tasks(tasks, tmp_path / "b", jobs=2, progress=False)
    assert pooled.computed == 6
    assert cache_state(tmp_path / "a") == cache_state(tmp_path / "b")
    assert len({r.meta["pid"] for r in pooled.results.values()}) >= 1
    assert os.getpid() not in {r.meta["pid"] for r in pooled.results.values()}


def test_resume_after_os_exit_mid_task(tmp_path):
    cache, count = tmp_path / "cache", 8
    proc = run_build_subprocess(cache, count, VIZ_TEST_CRASH_AT="5")
    proc.communicate(timeout=120)
    assert proc.returncode == 137
    finished = {p.name for p in cache.iterdir() if (p / "done.json").is_file()}
    assert len(finished) == 5  # tasks 0..4 done; 5 died half-written
    assert leftovers(cache)  # its staging folder is still there ...
    proc = run_build_subprocess(cache, count)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out) == {"computed": 3, "reused": 5}
    assert leftovers(cache) == []  # ... until the next run removes it
    clean = tmp_path / "clean"
    run_tasks(square_tasks(count), clean, progress=False)
    assert cache_state(cache) == cache_state(clean)


def test_resume_after_sigkill(tmp_path):
    cache, count = tmp_path / "cache", 12
    proc = run_build_subprocess(cache, count, VIZ_TEST_DELAY="0.15")
    deadline = time.time() + 60
    while time.time() < deadline:
        done = list(cache.glob("*/done.json")) if cache.is_dir() else []
        if len(done) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    finished = sum(1 for p in cache.iterdir() if (p / "done.json").is_file())
    assert 3 <= finished < count
    for d in cache.iterdir():  # nothing half-published: a result folder is complete or absent
        if d.is_dir() and not d.name.startswith("."):
            assert (d / "done.json").is_file() and (d / "value.txt").read_text().startswith("value=")
    report = run_tasks(square_tasks(count), cache, progress=False)
    assert (report.computed, report.reused) == (count - finished, finished)
    assert leftovers(cache) == []
    clean = tmp_path / "clean"
    run_tasks(square_tasks(count), clean, progress=False)
    assert cache_state(cache) == cache_state(clean)


# ----------------------------------------------------------------- batched kinds

@register_task("test_batched_sum", batch=3, batch_by=("group",))
def batched_task(tasks, ctxs):
    """One call for up to 3 tasks of the same group (like K units in one forward pass)."""
    ns = [t["n"] for t in tasks]
    for t, ctx in zip(tasks, ctxs):
        ctx.path("n.txt").write_text(str(t["n"]))
    return [{"n": t["n"], "batch": ns} for t in tasks]


def test_batched_kind_groups_by_params_and_reuses_per_task(tmp_path):
    tasks = [make_task("test_batched_sum", group=g, n=n) for g in ("a", "b") for n in range(4)]
    report = run_tasks(tasks, tmp_path, progress=False)
    assert report.computed == 8
    batches = {tuple(report.result(t).meta["batch"]) for t in tasks}
    # group a: [0,1,2] + [3]; group b likewise: never mixed across groups, at most 3 at once
    assert batches == {(0, 1, 2), (3,)}
    for t in tasks:
        assert report.result(t).path("n.txt").read_text() == str(t["n"])
        assert t["n"] in report.result(t).meta["batch"]
    # adding one task reuses all finished ones (per-task keys, not per-batch)
    more = tasks + [make_task("test_batched_sum", group="a", n=9)]
    again = run_tasks(more, tmp_path, progress=False)
    assert (again.computed, again.reused) == (1, 8)
    pooled = run_tasks([make_task("test_batched_sum", group="c", n=n) for n in range(5)], tmp_path / "pool",
                       jobs=2, progress=False)
    assert pooled.computed == 5
