"""`sgtlab reproduce`: a reduced quick experiment end to end, resume after SIGKILL, dry run."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgtlab.cli import main

from browser import check_page, chromium

REDUCED = ["--set", "train.epochs=1", "--set", "seeds=[0]", "--set", "train.train_subset=256",
           "--set", "attack.n=64", "--set", "attack.eps=[0.1,0.3]", "--set", "explain.n=16"]


def results(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_reduced_quick_end_to_end_writes_every_figure_and_table(tmp_path, capsys):
    out = tmp_path / "quick"
    assert main(["reproduce", "--out", str(out), "--no-progress", *REDUCED]) == 0
    # without progress bars (a background run logging to a file): one line per finished run
    log = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert len(log) == 7 and log[0].startswith("[1/7] ") and log[-1].startswith("[7/7] ")
    assert all(" finished in " in line and " min, clean " in line for line in log)
    assert "min left" in log[0] and log[-1].endswith("all done")
    rows = results(out)
    assert sorted(r["method"] for r in rows) == sorted(["st", "sgt", "at-fgsm", "at-pgd", "sga", "asgt", "scaat"])
    assert len({r["test_subset"] for r in rows}) == 1 and all(r["torch_version"] and r["command"] for r in rows)
    for r in rows:
        assert 0 <= float(r["clean_accuracy"]) <= 1
        assert float(r["rob:pgd:0.3"]) <= float(r["rob:pgd:0.1"]) <= float(r["clean_accuracy"])
    report = out / "report"
    html = (report / "report.html").read_text()
    for fig in ("robust_accuracy", "clean_accuracy", "saliency_grid", "masked_accuracy", "aopc", "low_saliency",
                "entropy"):
        for ext in ("png", "pdf"):
            path = report / "figures" / f"{fig}.{ext}"
            assert path.exists() and path.stat().st_size > 2000, path
    for table in ("headline", "per_run", "claims", "accuracy", "saliency_quality", "gradient_masking_checks",
                  "saliency_vs_st", "saliency_sanity_checks"):
        for ext in ("csv", "md", "tex"):
            assert (report / "tables" / f"{table}.{ext}").stat().st_size > 50
    assert html.count("<img src=\"data:image/png;base64,") >= 7
    assert "Claims of the studies" in html and "SGT (k=0.5) vs ST" in html and "95 % CI" in html
    assert "ASGT vs AT-PGD" in html and "Provenance" in html
    # 4 training steps do not train: every run is flagged (loss near ln 10) and nothing is compared
    assert "Left out of every comparison as under-trained: st-seed0 (final training loss" in html
    assert "Flagged runs" in html and "none gives a verdict" in html
    checks = json.loads((out / "runs" / "st-seed0" / "checks.json").read_text())
    assert checks["gradient_free_not_stronger"]["passed"] is not None  # pyautoattack is a dependency: never skipped
    # the headline ensemble is, per image, the worst case over the same suite for every image: the
    # sweep's FGSM and PGD and, at each headline eps, PGD restarts and Square (blank: a cheaper
    # attack had fooled the image); the gradient-masking checks' attacks are not part of it
    for run in ("st-seed0", "asgt-seed0"):
        with open(out / "runs" / run / "robustness_per_sample.csv", newline="") as f:
            per = list(csv.DictReader(f))
        assert not any(k.startswith("checks:") for k in per[0])
        for e in ("0.1", "0.3"):
            suite = [f"suite:pgd-restarts@{e}", f"suite:square@{e}"]
            for r in per:
                alive = r["clean_correct"] == "1" and r[f"fgsm@{e}"] == "1" and r[f"pgd@{e}"] == "1" and \
                    (e == "0.1" or r["ensemble@0.1"] == "1")
                assert (r[suite[0]] != "") == alive  # every image not yet fooled gets the suite
                ran = [int(r[k]) for k in [f"fgsm@{e}", f"pgd@{e}", *suite] if r[k] != ""]
                assert int(r[f"ensemble@{e}"]) == min(ran) * (e == "0.1" or int(r["ensemble@0.1"]))
    assert ("at eps 0.1 and 0.3 on every image also PGD (10 steps, 1 more random start) and Square (50 queries)"
            in html.replace("&#x27;", "'").replace("&#8217;", "’"))
    # the interpretability findings: the claims with verdicts, and the sanity checks with their picture
    assert "Interpretability findings" in html and "Claim: &quot;SCAAT gives lower saliency entropy" in html
    assert "measured verdict" in html and "Saliency sanity checks" in html
    assert (report / "figures" / "sanity.png").stat().st_size > 2000
    if chromium():  # the HTML opens in headless Chromium with no errors and every image loads
        verdict = check_page(report / "report.html")
        assert verdict["images"] >= 7 and verdict["broken"] == [] and verdict["errors"] == []
    # the report can be rebuilt from the finished runs alone
    (report / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (report / "report.html").exists()


def test_dry_run_lists_runs_without_work(tmp_path, capsys):
    out = tmp_path / "dry"
    assert main(["reproduce", "--out", str(out), "--dry-run", *REDUCED]) == 0
    text = capsys.readouterr().out
    assert "7 runs" in text and "to do" in text and not out.exists()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_killed_midway_and_restarted_finishes_with_each_run_once(tmp_path, workers):
    """SIGKILL once a run is complete and another is half-done (with 2 workers, the driver's worker
    processes die with it); the restarted command redoes no finished run, resumes the half-done one
    from its checkpoint, and the table holds each run once."""
    out = tmp_path / "kill"
    args = [sys.executable, "-m", "sgtlab", "reproduce", "--out", str(out), "--no-progress", "--workers", workers,
            "--set", "methods=[{label: ST, method: st}]", "--set", "seeds=[0,1,2]", "--set", "train.epochs=2",
            "--set", "train.train_subset=512", "--set", "attack.n=64", "--set", "attack.eps=[0.1]",
            "--set", "attack.checks=false", "--set", "explain.n=8", "--set", "explain.methods=[grad]"]
    names = ["st-seed0", "st-seed1", "st-seed2"]
    runs = out / "runs"

    def state():
        done = {n for n in names if (runs / n / "result.json").exists()}
        half = {n for n in names if (runs / n / "checkpoint.safetensors").exists()} - done
        return done, half

    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not all(state()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    done, half = state()
    assert done and half and proc.poll() is None, "the runs finished before they could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stamps = {n: (runs / n / "result.json").stat().st_mtime_ns for n in done}
    time.sleep(1)  # an orphaned worker would go on writing its run now
    logs = {n: (runs / n / "metrics.jsonl").read_text() if (runs / n / "metrics.jsonl").exists() else ""
            for n in half}
    time.sleep(1)
    assert all(((runs / n / "metrics.jsonl").read_text() if logs[n] else "") == logs[n] for n in half)
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = results(out)
    assert sorted(r["run"] for r in rows) == names
    assert {n: (runs / n / "result.json").stat().st_mtime_ns for n in done} == stamps  # not redone
    for n in names:
        epochs = [json.loads(line)["epoch"] for line in (runs / n / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2], (n, epochs)


def test_ctrl_c_stops_every_worker_at_once_and_exits_130(tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while two workers train:
    the command exits 130 with one line within seconds, and no worker goes on training or takes
    the next run (it used to wait in the pool's shutdown while both runs trained to their end)."""
    out = tmp_path / "int"
    args = [sys.executable, "-m", "sgtlab", "reproduce", "--out", str(out), "--no-progress", "--workers", "2",
            "--set", "methods=[{label: ST, method: st}]", "--set", "seeds=[0,1,2,3]", "--set", "train.epochs=50",
            "--set", "train.train_subset=256", "--set", "attack.n=16", "--set", "attack.eps=[0.1]",
            "--set", "attack.checks=false", "--set", "explain.n=8", "--set", "explain.methods=[grad]"]
    runs = out / "runs"

    def training():  # the runs whose first epoch is written: both workers are inside a run
        return [n for n in ("st-seed0", "st-seed1") if (runs / n / "metrics.jsonl").exists()
                and (runs / n / "metrics.jsonl").read_text().strip()]

    # a shell without job control starts background commands with SIGINT ignored: restore it
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while len(training()) < 2 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert len(training()) == 2 and proc.poll() is None, "the workers did not start training"
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.time()
        _, err = proc.communicate(timeout=60)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert "to resume, run: sgtlab reproduce" in err and took < 30, (took, err)
    logs = {n: (runs / n / "metrics.jsonl").read_text() for n in ("st-seed0", "st-seed1")}
    time.sleep(1.5)  # a worker left behind would go on writing its run, or start the next one
    assert {n: (runs / n / "metrics.jsonl").read_text() for n in logs} == logs
    assert not (runs / "st-seed2").exists() and not (runs / "st-seed3").exists()
    left = subprocess.run(["ps", "-o", "pid,stat,cmd", "-g", str(proc.pid)], capture_output=True, text=True).stdout
    # nobody is left running in the command's session. A zombie ("Z") has exited: it is a helper
    # (multiprocessing's resource tracker) that outlived the driver by a moment and now waits for
    # PID 1 to reap it, which a container's init may never do
    running = [line for line in left.strip().splitlines()[1:] if line.split()[1][0] != "Z"]
    assert not running, left


def test_another_experiment_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "x"
    (out).mkdir()
    (out / "experiment.json").write_text(json.dumps({"dataset": "mnist", "name": "other"}))
    r = subprocess.run([sys.executable, "-m", "sgtlab", "reproduce", "--out", str(out), *REDUCED],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "another experiment" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed")
def test_browser_probe_sees_broken_images_and_script_errors(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head></head><body><img alt='bad' src='data:image/png;base64,AAAA'>"
                    "<script>notAFunction();</script></body></html>")
    verdict = check_page(page)
    assert verdict["broken"] == ["bad"] and any("notAFunction" in e for e in verdict["errors"])


@pytest.mark.parametrize("value", ["0", "two"])
def test_bad_workers_value_is_refused_before_any_work(tmp_path, value):
    out = tmp_path / "w"
    r = subprocess.run([sys.executable, "-m", "sgtlab", "reproduce", "--out", str(out), "--workers", value, *REDUCED],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--workers" in r.stderr and "Traceback" not in r.stderr and not out.exists()


def test_local_workers_return_every_result_and_raise_a_run_error():
    import operator

    from sgtlab.experiments.executors import LocalExecutor

    assert sorted(LocalExecutor(2).map(operator.mul, [1, 2, 3], 10)) == [10, 20, 30]
    with pytest.raises(ZeroDivisionError):
        list(LocalExecutor(2).map(operator.truediv, [1, 2, 3], 0))
