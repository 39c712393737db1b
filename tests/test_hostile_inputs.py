"""Hostile inputs through the real CLI, each in its own process: every one ends with exit code 2 and
one line on stderr, no traceback, no file changed outside the case's own output folder, the shared
run's checkpoint unchanged, and a peak memory under 2 GB (recorded; the largest is printed).

The processes are forked from one server that imported sgtlab once (tests/cli_forkserver.py) and
run the `sgtlab` module as `python -m sgtlab` does; `test_the_server_answers_as_python_m_does`
checks a few cases against plain `python -m sgtlab` subprocesses."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
SERVER = Path(__file__).resolve().parent / "cli_forkserver.py"
PEAK_LIMIT_KB = 2 * 1024 * 1024  # 2 GB
TRAIN = ["--dataset", "mnist5k", "--epochs", "1", "--train-subset", "256", "--eval-subset", "100",
         "--batch-size", "64", "--device", "cpu", "--no-progress"]
TINY = ["--set", "train.epochs=1", "--set", "train.train_subset=128", "--set", "train.eval_subset=50",
        "--set", "seeds=[0]", "--set", "methods=[{method: st}]", "--set", "attack.n=20", "--set", "attack.eps=[0.1]",
        "--set", "attack.attacks=[fgsm]", "--set", "attack.checks=false", "--set", "explain.methods=[]",
        "--workers", "1", "--no-progress", "--device", "cpu"]
PEAKS: dict[str, int] = {}
TIMES: dict[str, float] = {}


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep),
               OMP_NUM_THREADS="1")
    env.pop("SGTLAB_DATA", None)
    return env


class Server:
    """A fork server speaking JSON lines (see cli_forkserver.py)."""

    def __init__(self, root: Path):
        self.work = root / "_server"
        self.work.mkdir()
        self.proc = subprocess.Popen([sys.executable, str(SERVER), str(self.work)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=_env(), cwd=root)
        assert "ready" in json.loads(self.proc.stdout.readline())

    def __call__(self, argv: list[str], cwd: Path, env: dict | None = None, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"argv": [str(a) for a in argv], "cwd": str(cwd), "env": env or {}, **kw})
                              + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "_server"]
        rel = os.path.relpath(dirpath, root)
        out[rel + "/"] = (0, 0)  # folders count too: none may appear
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.join(rel, f)] = (st.st_size, st.st_mtime_ns)
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_checkpoint_copy(src_run: Path, dest: Path, meta_text: str | None = None, meta_edit=None) -> Path:
    """A copy of a run whose checkpoint metadata is replaced (text) or edited (a function)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shutil.copytree(src_run, dest)
    ck = dest / "checkpoint.safetensors"
    tensors = load_file(str(ck))
    with safe_open(str(ck), "pt") as f:
        meta = json.loads(f.metadata()["sgtlab"])
    if meta_edit is not None:
        meta_edit(meta)
        meta_text = json.dumps(meta)
    save_file(tensors, str(ck), metadata={"sgtlab": meta_text})
    (dest / ".sgtlab.lock").unlink(missing_ok=True)
    return dest


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The server, one small trained run (1 epoch, 256 images) and the hostile files of the cases."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "logs").mkdir()
    server = Server(root)
    res = server(["train", "--out", root / "run", *TRAIN], cwd=root)
    assert res["rc"] == 0, res["stderr"]
    (root / "afile").write_text("not a folder\n")
    for sub in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz"):
        (root / "dirdata" / "mnist" / sub).mkdir(parents=True)
        (root / "garbage" / "mnist").mkdir(parents=True, exist_ok=True)
        (root / "garbage" / "mnist" / sub).write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    (root / "no-dataset.yaml").write_text("methods: [{method: st}]\nseeds: [0]\n")
    (root / "list-dataset.yaml").write_text("dataset: [x]\nmethods: [{method: st}]\n")
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "tag.yaml").write_text("dataset: !!python/object/apply:os.system ['touch pwned']\n")
    (root / "bomb.yaml").write_text("dataset: mnist5k\nmethods: [{method: st}]\nexplain: {x: "
                                    "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                                    "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
                                    "[*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]}\n")
    (root / "dir.yaml").mkdir()
    run = root / "run"
    ckpts = root / "ckpts"
    ckpts.mkdir()
    variants = {
        "types": lambda m: m["arch"].update(in_channels="1"),
        "missing": lambda m: m.pop("arch"),
        "absurd": lambda m: m["arch"].update(in_channels=10**9, mean=[0.1] * 3, std=[0.3] * 3),
        "classes": lambda m: m["arch"].update(num_classes=10**12),
        "epoch-range": lambda m: m.update(epoch=7),
        "epoch-zero": lambda m: m.update(epoch=0),
        "epoch-type": lambda m: m.update(epoch="1"),
        "past-epochs": lambda m: (m.update(epoch=3), m["config"].update(epochs=5)),
        "config-type": lambda m: m.update(config=[1, 2]),
        "optim": lambda m: m["optimizer"].update(param_groups=[{"params": "x"}]),
    }
    for name, edit in variants.items():
        write_checkpoint_copy(run, ckpts / name, meta_edit=edit)
    write_checkpoint_copy(run, ckpts / "notjson", meta_text="{not json")
    write_checkpoint_copy(run, ckpts / "deep", meta_text="[" * 100000 + "]" * 100000)
    (ckpts / "garbage").mkdir()
    (ckpts / "garbage" / "checkpoint.safetensors").write_bytes(os.urandom(5000))
    (ckpts / "isdir" / "checkpoint.safetensors").mkdir(parents=True)
    yield {"root": root, "server": server, "run": run, "ckpt_sha": sha(run / "checkpoint.safetensors")}
    server.close()
    if PEAKS:
        worst = max(PEAKS, key=PEAKS.get)
        print(f"\npeak memory (ru_maxrss, MB) over {len(PEAKS)} hostile cases: largest {PEAKS[worst] / 1024:.0f} "
              f"({worst}); median {sorted(PEAKS.values())[len(PEAKS) // 2] / 1024:.0f}; slowest (s): "
              + ", ".join(f"{k} {TIMES[k]:.1f}" for k in sorted(TIMES, key=TIMES.get)[-5:]))


# (id, argv with {run} {root} {case} {ck:NAME} placeholders, text the one line must hold)
CASES = [
    # --set values and presets: refused before any work, --dry-run or not
    ("set-epochs-abc", ["reproduce", "--set", "train.epochs=abc", "--dry-run"], "epochs must be an integer"),
    ("set-methods-abc", ["reproduce", "--set", "methods=abc", "--dry-run"], "methods must be"),
    ("set-epochs-1.5", ["reproduce", "--set", "train.epochs=1.5", "--dry-run"], "epochs must be an integer"),
    ("set-dataset-list", ["reproduce", "--set", "dataset=[x]", "--dry-run"], "dataset: NAME"),
    ("set-unknown-attack", ["reproduce", *TINY, "--set", "attack.attacks=[nope]", "--out", "{case}/out"],
     "unknown attack 'nope'"),
    ("set-unknown-saliency", ["reproduce", *TINY, "--set", "explain.methods=[nope]", "--out", "{case}/out"],
     "unknown saliency"),
    ("set-explain-option", ["reproduce", "--set", "explain.stepz=3", "--dry-run"], "unknown explain options"),
    ("set-seed-negative", ["reproduce", "--set", "seeds=[-1]", "--dry-run"], "seeds must be"),
    ("set-seed-huge", ["reproduce", "--set", "seeds=[100000000000000000000000]", "--dry-run"], "seeds must be"),
    ("set-lr-nan", ["reproduce", "--set", "train.lr=.nan", "--dry-run"], "not a finite number"),
    ("set-eps-string", ["reproduce", "--set", "attack.eps=[nan]", "--dry-run"], "attack.eps must be a number"),
    ("set-eps-grid-size", ["reproduce", "--set", "attack.eps=[" + ",".join(["0.1"] * 1001) + "]", "--dry-run"],
     "the limit is 1000"),
    ("set-into-scalar", ["reproduce", "--set", "train.epochs.x=1", "--dry-run"], "not a mapping or list"),
    ("set-bad-index", ["reproduce", "--set", "methods.99.k=0.3", "--dry-run"], "not an index"),
    ("set-no-equals", ["reproduce", "--set", "train.epochs", "--dry-run"], "KEY=VALUE"),
    ("set-date", ["reproduce", "--set", "train.lr=2020-01-01", "--dry-run"], "not allowed"),
    ("set-binary-tag", ["reproduce", "--set", "train.lr=!!binary aGVsbG8=", "--dry-run"], "not allowed"),
    ("set-name-path", ["reproduce", "--set", "name=../../etc", "--dry-run"], "without '/'"),
    ("preset-no-dataset", ["reproduce", "--preset", "{root}/no-dataset.yaml", "--dry-run"], "dataset: NAME"),
    ("preset-list-dataset", ["reproduce", "--preset", "{root}/list-dataset.yaml", "--dry-run"], "dataset: NAME"),
    ("preset-binary", ["reproduce", "--preset", "{root}/binary.yaml", "--dry-run"], "preset"),
    ("preset-python-tag", ["reproduce", "--preset", "{root}/tag.yaml", "--dry-run"], "not valid YAML"),
    ("preset-alias-bomb", ["reproduce", "--preset", "{root}/bomb.yaml", "--dry-run"], "the limit"),
    ("preset-directory", ["reproduce", "--preset", "{root}/dir.yaml", "--dry-run"], "is a folder"),
    ("workers-zero", ["reproduce", "--workers", "0", "--dry-run"], "--workers must be >= 1"),
    ("reproduce-out-file", ["reproduce", *TINY, "--out", "{root}/afile"], "is a file"),
    ("reproduce-out-under-file", ["reproduce", *TINY, "--out", "{root}/afile/sub"], "cannot create"),
    # training options
    ("train-eps-nan", ["train", "--out", "{case}/out", "--train-eps", "nan", *TRAIN], "not a finite number"),
    ("train-seed-huge", ["train", "--out", "{case}/out", "--seed", "100000000000000000000000", *TRAIN],
     "the limit is"),
    ("train-seed-negative", ["train", "--out", "{case}/out", "--seed", "-1", *TRAIN], "seed must be >= 0"),
    ("train-gamma-nan", ["train", "--out", "{case}/out", "--method", "scaat", "--gamma", "nan", *TRAIN],
     "not a finite number"),
    ("train-lr-inf", ["train", "--out", "{case}/out", "--lr", "inf", *TRAIN], "not a finite number"),
    ("train-epochs-float", ["train", "--out", "{case}/out", *TRAIN, "--epochs", "1.5"], "not an integer"),
    ("train-epochs-huge", ["train", "--out", "{case}/out", *TRAIN, "--epochs", "10000000"], "epochs must be <="),
    ("train-out-file", ["train", "--out", "{root}/afile", *TRAIN], "is a file"),
    ("train-out-under-file", ["train", "--out", "{root}/afile/run", *TRAIN], "cannot create"),
    ("train-exists", ["train", "--out", "{run}", *TRAIN], "pass --resume"),
    ("data-dir-file", ["train", "--out", "{case}/out", *TRAIN, "--dataset", "mnist", "--data-dir", "{root}/afile"],
     "is a file"),
    ("data-file-is-dir", ["train", "--out", "{case}/out", *TRAIN, "--dataset", "mnist", "--data-dir",
                          "{root}/dirdata"], "is a folder"),
    ("data-garbage", ["train", "--out", "{case}/out", *TRAIN, "--dataset", "mnist", "--data-dir", "{root}/garbage"],
     "corrupt"),
    # damaged checkpoints, by evaluate and by train --resume (on a copy: the "run folder")
    ("ckpt-garbage", ["evaluate", "{ck:garbage}", "--n", "10"], "not a readable sgtlab checkpoint"),
    ("ckpt-is-dir", ["evaluate", "{ck:isdir}", "--n", "10"], "no checkpoint"),
    ("ckpt-not-json", ["evaluate", "{ck:notjson}", "--n", "10"], "not a readable sgtlab checkpoint"),
    ("ckpt-deep-json", ["evaluate", "{ck:deep}", "--n", "10"], "checkpoint"),
    ("ckpt-wrong-types", ["evaluate", "{ck:types}", "--n", "10"], "damaged metadata"),
    ("ckpt-missing-keys", ["evaluate", "{ck:missing}", "--n", "10"], "damaged metadata"),
    ("ckpt-absurd-channels", ["evaluate", "{ck:absurd}", "--n", "10"], "damaged metadata"),
    ("ckpt-absurd-classes", ["evaluate", "{ck:classes}", "--n", "10"], "damaged metadata"),
    ("resume-epoch-range", ["train", "--out", "{ck:epoch-range}", "--resume", *TRAIN], "damaged"),
    ("resume-epoch-zero", ["train", "--out", "{ck:epoch-zero}", "--resume", *TRAIN], "damaged"),
    ("resume-epoch-type", ["train", "--out", "{ck:epoch-type}", "--resume", *TRAIN], "damaged metadata"),
    ("resume-past-epochs", ["train", "--out", "{ck:past-epochs}", "--resume", *TRAIN], "pass --epochs 3 or more"),
    ("resume-config-type", ["train", "--out", "{ck:config-type}", "--resume", *TRAIN], "damaged metadata"),
    ("resume-optimizer", ["train", "--out", "{ck:optim}", "--resume", *TRAIN], "optimizer or RNG state"),
    # attack / explain / evaluate options
    ("attack-eps-grid-huge", ["attack", "{run}", "--eps", "0:1e9:1e-9"], "the limit is 1000"),
    ("attack-eps-list-huge", ["attack", "{run}", "--eps", ",".join(["0.1"] * 5000)], "the limit is 1000"),
    ("attack-eps-nan", ["attack", "{run}", "--eps", "0.1,nan"], "not a finite number"),
    ("attack-eps-inf-range", ["attack", "{run}", "--eps", "0:inf:0.1"], "finite"),
    ("attack-seed-negative", ["attack", "{run}", "--seed", "-1"], "--seed must be >= 0"),
    ("attack-unknown", ["attack", "{run}", "--attacks", "nope"], "unknown attack"),
    ("attack-out-file", ["attack", "{run}", "--n", "8", "--attacks", "fgsm", "--eps", "0.1", "--out", "{root}/afile",
                         "--device", "cpu"], "afile"),
    ("explain-qs-grid", ["explain", "{run}", "--out", "{case}/out", "--qs", "0:1:1e-12"], "the limit is 1000"),
    ("explain-seed-huge", ["explain", "{run}", "--out", "{case}/out", "--seed", "10" * 20], "the limit is"),
    ("explain-noise-nan", ["explain", "{run}", "--out", "{case}/out", "--smoothgrad-noise", "nan"], "finite"),
    ("explain-out-file", ["explain", "{run}", "--out", "{root}/afile", "--n", "8", "--methods", "grad", "--metrics",
                          "entropy", "--device", "cpu", "--no-progress"], "afile"),
    ("evaluate-n-zero", ["evaluate", "{run}", "--n", "0"], "--n must be >= 1"),
    ("evaluate-dataset-mismatch", ["evaluate", "{run}", "--dataset", "cifar10"], "channel"),
    ("report-not-experiment", ["report", "{root}/afile"], "is a file"),
    ("report-missing-folder", ["report", "{case}/nx/a/b"], "does not exist"),
    ("train-deep-out-no-data", ["train", "--out", "{case}/x/y/z", *TRAIN, "--dataset", "mnist", "--data-dir",
                                "{root}/garbage"], "corrupt"),
]


def _fill(argv: list[str], world, case: Path) -> list[str]:
    subs = {"{run}": str(world["run"]), "{root}": str(world["root"]), "{case}": str(case)}
    out = []
    for a in argv:
        if a.startswith("{ck:"):
            a = str(world["root"] / "ckpts" / a[4:-1])
        for k, v in subs.items():
            a = a.replace(k, v)
        out.append(a)
    return out


def _check_one_line_error(res: dict, expect: str) -> str:
    err = res["stderr"]
    assert "Traceback" not in err + res["stdout"], err
    assert res["rc"] == 2, (res["rc"], err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name,argv,expect", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_line_exit_2(world, name, argv, expect):
    root = world["root"]
    case = root / "cases" / name
    case.mkdir(parents=True)
    allowed = {}
    if any("{ck:" in a for a in argv):  # train --resume / evaluate on a damaged copy: its run folder
        allowed = {os.path.relpath(root / "ckpts" / a[4:-1], root) for a in argv if a.startswith("{ck:")}
    before = snapshot(root)
    res = world["server"](_fill(argv, world, case), cwd=case)
    PEAKS[name], TIMES[name] = res["maxrss_kb"], res["seconds"]
    _check_one_line_error(res, expect)
    after = snapshot(root)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)
                     and not any(k.startswith(a + "/") or k == a + "/" for a in allowed))
    assert changed == [], f"files changed outside the run folder: {changed}"
    assert sha(world["run"] / "checkpoint.safetensors") == world["ckpt_sha"]
    assert res["maxrss_kb"] < PEAK_LIMIT_KB, res["maxrss_kb"]


def test_a_refused_experiment_leaves_no_folder_and_the_corrected_one_starts(world):
    """`attack.attacks=[nope]` is refused before training and leaves nothing, so the corrected
    command is not refused as 'another experiment'."""
    case = world["root"] / "cases" / "_corrected"
    case.mkdir(parents=True)
    server = world["server"]
    _check_one_line_error(server(["reproduce", *TINY, "--set", "attack.attacks=[nope]", "--out", "exp"], cwd=case),
                          "unknown attack")
    assert not (case / "exp").exists()
    res = server(["reproduce", *TINY, "--out", "exp", "--dry-run"], cwd=case)
    assert res["rc"] == 0 and "st-seed0" in res["stdout"], res["stderr"]


def test_set_reads_numbers_as_a_person_means_them(world):
    case = world["root"] / "cases" / "_numbers"
    case.mkdir(parents=True)
    res = world["server"](["reproduce", "--set", "train.lr=1e-3", "--set", "train.epochs=3", "--dry-run"], cwd=case)
    assert res["rc"] == 0 and "3 epochs" in res["stdout"], res["stderr"]
    from sgtlab.experiments.presets import apply_overrides, expand, load_preset

    runs = expand(apply_overrides(load_preset("quick"), ["train.lr=1e-3", "methods.1.k=5e-1"]))
    assert runs[0].train["lr"] == 0.001
    assert [r.train["method_cfg"]["k"] for r in runs if r.train["method"] == "sgt"] == [0.5, 0.5]


def test_divergence_says_no_checkpoint_exists_when_none_does(world):
    case = world["root"] / "cases" / "_nan"
    case.mkdir(parents=True)
    res = world["server"](["train", "--out", "out", *TRAIN, "--lr", "1e30", "--train-subset", "128"], cwd=case)
    line = _check_one_line_error(res, "no checkpoint was written")
    assert "kept" not in line
    assert not (case / "out" / "checkpoint.safetensors").exists()


def test_a_full_disk_keeps_the_previous_checkpoint_and_removes_stale_temporaries(world):
    """RLIMIT_FSIZE makes every write past 200 kB fail (EFBIG), as a full disk would, so the
    checkpoint of epoch 2 cannot be written; temporaries of a killed writer are removed on start."""
    run = world["root"] / "cases" / "_full" / "run"
    shutil.copytree(world["run"], run)
    old = sha(run / "checkpoint.safetensors")
    host = socket.gethostname().replace(".", "_")
    dead = run / f".checkpoint.safetensors.{host}-{2**22 + 12345}.abcd.tmp"  # no such pid (pid_max is 2**22)
    dead.write_bytes(b"x" * 1000)
    old_style = run / ".checkpoint.safetensors.k2j4h5.tmp"
    old_style.write_bytes(b"x" * 1000)
    os.utime(old_style, (1e9, 1e9))
    res = world["server"](["train", "--out", run, "--resume", *TRAIN, "--epochs", "2"], cwd=run.parent,
                          fsize=200_000)
    _check_one_line_error(res, "the previous file is kept")
    assert sha(run / "checkpoint.safetensors") == old
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []


def test_ctrl_c_names_the_command_that_resumes(world):
    case = world["root"] / "cases" / "_ctrl_c"
    case.mkdir(parents=True)
    argv = ["train", "--out", "out", *TRAIN, "--epochs", "3", "--train-subset", "128"]
    # Ctrl-C as epoch 2's test evaluation starts (epoch 1's checkpoint and metrics line are written):
    # a point the run reaches for certain, however loaded the machine, not a race with the training
    res = world["server"](argv, cwd=case, interrupt_at="sgtlab.train.loop:accuracy", interrupt_call=2)
    assert res["rc"] == 130 and "Traceback" not in res["stderr"], res
    line = res["stderr"].strip().splitlines()[-1]
    assert "to resume, run: sgtlab train" in line, line
    resume = shlex.split(line.split("to resume, run: ", 1)[1])
    assert resume[:1] == ["sgtlab"] and "--resume" in resume
    res = world["server"](resume[1:], cwd=case)
    assert res["rc"] == 0, res["stderr"]
    epochs = [json.loads(x)["epoch"] for x in (case / "out" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_the_server_answers_as_python_m_does(world):
    """Two cases through a plain `python -m sgtlab` subprocess: the same exit code and line."""
    root = world["root"]
    (root / "cases").mkdir(exist_ok=True)
    for argv in (["train", "--out", "x", "--lr", "inf"], ["reproduce", "--set", "methods=abc", "--dry-run"]):
        direct = subprocess.run([sys.executable, "-m", "sgtlab", *argv], capture_output=True, text=True, env=_env(),
                                cwd=root / "cases", timeout=120)
        served = world["server"](argv, cwd=root / "cases")
        assert (direct.returncode, direct.stderr) == (served["rc"], served["stderr"])
        assert direct.returncode == 2 and len(direct.stderr.strip().splitlines()) == 1


def test_an_internal_error_names_a_log_with_the_traceback(tmp_path, monkeypatch, capsys):
    import argparse

    from sgtlab.cli.handler import run_command

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setenv("SGTLAB_LOG_DIR", str(tmp_path))
    rc = run_command(argparse.Namespace(command="train", _run=broken), ["train", "--out", "x"])
    err = capsys.readouterr().err
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "internal error" in err and "ZeroDivisionError" in err
    logs = list(tmp_path.glob("sgtlab-crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "Traceback" in text and "a bug" in text and "sgtlab train --out x" in text
