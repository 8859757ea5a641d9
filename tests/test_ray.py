"""The Ray executor: same results as local, workers that die are retried, a killed driver
resumes, and a gallery built on Ray is byte-identical to the local build (docs/scale.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vizsuite.errors import UserError
from vizsuite.tasks import make_task, register_task, run_tasks

from .test_tasks import HERE, cache_state, square_tasks

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")

ROOT = HERE.parent
TINY = str(ROOT / "tests" / "models" / "tiny_gallery_model.py") + ":spec"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs, and 1 logical GPU: Ray schedules by declared resources, so
    GPU requests are testable without one) for the module; run_tasks reuses it and leaves it up."""
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@register_task("test_dies_once")
def dies_once(task, ctx):
    """Kills its own worker process the first time it runs (a marker remembers), like kill -9."""
    marker = Path(task["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(137)
    return {"n": task["n"], "pid": os.getpid()}


@register_task("test_slow")
def slow_task(task, ctx):
    time.sleep(task["delay"])  # a parameter, not the environment: Ray workers have their own
    return {"n": task["n"]}


def slow_tasks(count: int, delay: float = 0.5):
    return [make_task("test_slow", n=i, delay=delay) for i in range(count)]


@register_task("test_gpu_ids")
def gpu_ids(task, ctx):
    return {"gpus": [int(g) for g in ray.get_gpu_ids()], "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def test_gpus_per_worker_are_asked_of_ray(tmp_path, local_ray):
    """--gpus-per-worker 1: each worker is given one GPU by Ray (CUDA_VISIBLE_DEVICES set for
    it); more GPUs than the cluster has is one clear error, not a build that waits forever."""
    tasks = [make_task("test_gpu_ids", n=i) for i in range(2)]
    report = run_tasks(tasks, tmp_path / "g", progress=False, executor="ray", gpus_per_worker=1)
    for t in tasks:
        assert report.result(t).meta["gpus"] == [0] and report.result(t).meta["visible"] == "0"
    plain = run_tasks([make_task("test_gpu_ids", n=9)], tmp_path / "c", progress=False, executor="ray")
    assert list(plain.results.values())[0].meta["gpus"] == []
    with pytest.raises(UserError, match="has 1 GPU"):
        run_tasks([make_task("test_gpu_ids", n=5)], tmp_path / "h", progress=False, executor="ray",
                  gpus_per_worker=2)


def test_ray_results_equal_local(tmp_path, local_ray):
    tasks = square_tasks(6)
    local = run_tasks(tasks, tmp_path / "a", progress=False)
    on_ray = run_tasks(tasks, tmp_path / "b", progress=False, executor="ray")
    assert on_ray.computed == 6 and cache_state(tmp_path / "a") == cache_state(tmp_path / "b")
    assert os.getpid() not in {r.meta["pid"] for r in on_ray.results.values()}  # ran in Ray workers
    again = run_tasks(tasks, tmp_path / "b", progress=False, executor="ray")
    assert (again.computed, again.reused) == (0, 6)


def test_worker_killed_mid_task_is_retried(tmp_path, local_ray):
    marker = tmp_path / "died"
    tasks = [make_task("test_dies_once", n=i, marker=str(marker)) for i in range(3)]
    report = run_tasks(tasks, tmp_path / "cache", progress=False, executor="ray")
    assert report.computed == 3 and not report.failed
    died = int(marker.read_text())
    assert died not in {r.meta["pid"] for r in report.results.values()}  # finished by a restarted worker
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.endswith(".part")]


def test_killed_driver_resumes_with_no_recomputation(tmp_path, local_ray):
    cache, count = tmp_path / "cache", 12
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import tests.test_ray as T; "
            f"from vizsuite.tasks import run_tasks; "
            f"run_tasks(T.slow_tasks({count}), {str(cache)!r}, progress=False, executor='ray', "
            f"ray_address={local_ray!r}, jobs=1)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    done = []
    while time.time() < deadline:
        done = [p for p in cache.glob("*") if (p / "done.json").is_file()] if cache.exists() else []
        if len(done) >= 3:
            break
        time.sleep(0.1)
    proc.kill()
    proc.communicate(timeout=60)
    time.sleep(2)  # let the cluster's worker finish or drop what it was running
    finished = {p.name for p in cache.glob("*") if (p / "done.json").is_file()}
    assert 3 <= len(finished) < count
    report = run_tasks(slow_tasks(count), cache, progress=False, executor="ray")
    assert report.reused == len(finished) and report.computed == count - len(finished)


def test_gallery_on_ray_is_identical_to_local(tmp_path, local_ray):
    from .cli_helpers import run_cli

    args = ["gallery", TINY, "--layers", "relu2,relu3", "--units", "2", "--steps", "8", "--size", "32",
            "--diversity", "2", "--quiet"]
    code, out, err = run_cli(*args, "-o", str(tmp_path / "local"))
    assert code == 0, err
    code, out, err = run_cli(*args, "-o", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", local_ray)
    assert code == 0, err

    def files(site: Path) -> dict:
        return {str(p.relative_to(site)): p.read_bytes() for p in sorted(site.rglob("*"))
                if p.is_file() and ".cache" not in p.parts and p.name != "manifest.json"}

    a, b = files(tmp_path / "local"), files(tmp_path / "ray")
    assert a.keys() == b.keys() and len(a) > 10
    assert [k for k in a if a[k] != b[k]] == []
    manifests = [json.loads((tmp_path / s / "manifest.json").read_text()) for s in ("local", "ray")]
    assert manifests[0]["items"] == manifests[1]["items"]  # all but the timestamp and argv


def test_ablation_sweep_on_ray_equals_local_and_resumes(tmp_path, local_ray):
    """`vizsuite ablate` runs as tasks: on Ray the same effects.csv, byte for byte; a rerun reuses
    every finished chunk."""
    import numpy as np
    from PIL import Image

    from .cli_helpers import run_cli

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(imgs / f"i{i}.png")
    args = ["ablate", TINY, "--layer", "relu2", "--images", str(imgs), "--target", "1", "--units-per-task", "3"]
    code, out, err = run_cli(*args, "-o", str(tmp_path / "local"))
    assert code == 0, err
    assert "3 tasks: 3 computed" in out, out  # relu2's 8 channels, 3 per task
    code, out, err = run_cli(*args, "-o", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", local_ray)
    assert code == 0, err
    assert (tmp_path / "local" / "effects.csv").read_bytes() == (tmp_path / "ray" / "effects.csv").read_bytes()
    code, out, err = run_cli(*args, "-o", str(tmp_path / "ray"))
    assert code == 0 and "0 computed, 3 reused" in out, (out, err)


def test_describe_on_ray_equals_local(tmp_path, local_ray):
    """`vizsuite describe --executor ray`: the same descriptions.json as the local run."""
    import numpy as np
    from PIL import Image

    from .cli_helpers import run_cli

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(imgs / f"i{i}.png")
    args = ["describe", TINY, "--units", "relu2:0", "relu2:3", "relu3:1", "--images", str(imgs), "--views", "2",
            "--causal", "2", "--quiet"]
    code, out, err = run_cli(*args, "-o", str(tmp_path / "local"))
    assert code == 0, err
    code, out, err = run_cli(*args, "-o", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", local_ray)
    assert code == 0, err
    a, b = (json.loads((tmp_path / d / "descriptions.json").read_text())["items"] for d in ("local", "ray"))
    assert a == b and len(a) == 3


def test_without_ray_one_line(monkeypatch):
    from vizsuite.tasks.ray_executor import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UserError, match=r'pip install -e "\.\[ray\]"'):
        require_ray()
    with pytest.raises(UserError, match="needs Ray"):
        run_tasks(square_tasks(1), "/nonexistent-never-created", progress=False, executor="ray")
    with pytest.raises(UserError, match="unknown executor"):
        run_tasks(square_tasks(1), "/nonexistent-never-created", progress=False, executor="spark")
