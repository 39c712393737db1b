"""Runs as Ray tasks: the executor on toy functions, then `sgtlab reproduce --executor ray` on a
local Ray against the local runner. One local Ray (2 CPUs) for the whole module: it takes seconds
to start. Skipped where Ray (the optional extra `sgtlab[ray]`) is not installed, except the checks
that need no Ray."""
from __future__ import annotations

import csv
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtlab.cli import main
from sgtlab.errors import SgtlabError
from sgtlab.experiments.executors import RayExecutor, get_executor

# two runs (ST, seeds 0 and 1), each a few seconds: training, and a small robustness sweep (the
# saliency metrics are left out: they take longer than the rest, and add nothing to this test)
TWO_RUNS = ["--set", "methods=[{label: ST, method: st}]", "--set", "seeds=[0,1]", "--set", "train.epochs=1",
            "--set", "train.train_subset=256", "--set", "train.eval_subset=200", "--set", "attack.n=64",
            "--set", "attack.attacks=[fgsm,pgd]", "--set", "attack.eps=[0.1,0.3]", "--set", "attack.checks=false",
            "--set", "explain.methods=[]"]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", object_store_memory=80 * 2**20)
    yield ray
    ray.shutdown()


def test_local_runner_never_imports_ray():
    code = ("import sys\nfrom sgtlab.cli import build_parser\nbuild_parser()\n"
            "from sgtlab.experiments.executors import get_executor\n"
            "assert list(get_executor('local').map(abs, [-2, 3])) == [2, 3]\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_missing_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(SgtlabError, match=r'pip install "sgtlab\[ray\]"'):
        get_executor("ray")


def test_unreachable_cluster_fails_fast():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(SgtlabError, match="no Ray cluster answers"):
        get_executor("ray", address=f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10
    with pytest.raises(SgtlabError, match="--executor ray"):
        get_executor("local", address=f"127.0.0.1:{port}")


def test_results_are_yielded_as_tasks_finish(local_ray, tmp_path):
    def task(item, folder):
        name, wait = item
        if wait:  # finishes only once the driver has received the other result (or after 60 s)
            deadline = time.time() + 60
            while not (Path(folder) / "go").exists() and time.time() < deadline:
                time.sleep(0.02)
            return name, (Path(folder) / "go").exists()
        return name, None

    results = RayExecutor().map(task, [("a", True), ("b", False)], str(tmp_path))
    assert next(results) == ("b", None)
    (tmp_path / "go").touch()
    assert next(results) == ("a", True)
    assert list(results) == []


def test_an_error_in_a_run_surfaces_as_itself(local_ray):
    def task(x):
        if x == 2:
            raise SgtlabError(f"bad run {x}")
        return x

    with pytest.raises(SgtlabError, match="^bad run 2$"):
        list(RayExecutor().map(task, [2]))
    assert sorted(RayExecutor().map(task, [0, 1, 3])) == [0, 1, 3]  # Ray stays usable


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_plugins_reach_the_ray_tasks(local_ray, tmp_path, monkeypatch):
    """`--import MODULE` with `--executor ray`: the tasks import the plug-in too (a Ray worker does not
    inherit the driver's environment), so a plug-in data set, model and method train on Ray."""
    from plugin_module import plugin_source

    from sgtlab import plugins

    monkeypatch.chdir(tmp_path)  # the plug-in module lives here, as a user's own file would
    monkeypatch.setenv(plugins.ENV, "")  # restored at teardown: no later test imports the plug-in
    (tmp_path / "rayplug.py").write_text(plugin_source("rp", register=True))
    assert main(["--import", "rayplug", "reproduce", "--out", "plug", "--executor", "ray", "--no-progress",
                 "--set", "dataset=rp-bars", "--set", "model=rp-tiny", "--set", "methods=[{label: S, method: rp-smooth}]",
                 "--set", "seeds=[0]", "--set", "train.epochs=1", "--set", "train.train_subset=null",
                 "--set", "attack.n=8", "--set", "attack.attacks=[fgsm]", "--set", "attack.eps=[0.1]",
                 "--set", "attack.checks=false", "--set", "explain.methods=[]"]) == 0
    rows = read_table(tmp_path / "plug" / "results.csv")
    assert [(r["method"], r["dataset"], r["model"]) for r in rows] == [("rp-smooth", "rp-bars", "rp-tiny")]


def test_reproduce_on_ray_gives_the_local_results_table(local_ray, tmp_path, monkeypatch):
    import torch

    from sgtlab.cli import build_parser
    from sgtlab.cli.reproduce import build_config
    from sgtlab.experiments.runner import run_experiment

    monkeypatch.chdir(tmp_path)  # a relative --out: the workers must write where the driver reads
    assert main(["reproduce", "--out", "ray", "--executor", "ray", "--no-progress", *TWO_RUNS]) == 0
    assert (tmp_path / "ray" / "report" / "report.html").exists()
    cfg = build_config(build_parser().parse_args(["reproduce", *TWO_RUNS]))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the Ray tasks (1 CPU each): same float rounding, bit-equal results
    try:
        run_experiment(cfg, tmp_path / "local", progress=False)
    finally:
        torch.set_num_threads(threads)
    on_ray, local = read_table(tmp_path / "ray" / "results.csv"), read_table(tmp_path / "local" / "results.csv")
    assert [r["run"] for r in on_ray] == [r["run"] for r in local] == ["st-seed0", "st-seed1"]
    assert any(k.startswith("rob:pgd:") for k in on_ray[0])
    for a, b in zip(on_ray, local):
        assert a.keys() == b.keys()
        # timings and provenance (date, command line) differ by nature; every number must not
        same = [k for k in a if not k.startswith("seconds") and k not in ("date", "command")]
        assert {k: a[k] for k in same} == {k: b[k] for k in same}
    assert on_ray[0]["train_test_accuracy"] != on_ray[1]["train_test_accuracy"]  # the seeds differ
    # finished runs are skipped on Ray as locally: a second start sends no task
    stamp = (tmp_path / "ray" / "runs" / "st-seed0" / "result.json").stat().st_mtime_ns
    rows = run_experiment(cfg, tmp_path / "ray", executor="ray", progress=False)
    assert len(rows) == 2 and (tmp_path / "ray" / "runs" / "st-seed0" / "result.json").stat().st_mtime_ns == stamp
