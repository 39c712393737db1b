"""The second hostile round (issue 28): nothing overwritten, nothing followed, nothing unbounded.

Each case runs the real CLI in its own process (the fork server of test_hostile_inputs.py) and
checks what the round found broken: a symbolic link where sgtlab writes (lock, result, checkpoint)
leaves the file it points to byte-identical; a finished result is kept unless --overwrite; readers
refuse FIFOs, devices, lying headers and huge images within a memory limit the test sets; and every
refusal is one line and exit code 2."""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_hostile_inputs import TINY, TRAIN, Server, _check_one_line_error, sha, snapshot

PEAK_KB = 1536 * 1024  # every case here stays under 1.5 GB (ru_maxrss, which includes the server's pages)
OUTSIDE = b"my thesis, chapter 3: not to be overwritten\n"
NPZ_TRAIN = ["--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress"]


def _png(path: Path, size: tuple[int, int], value: int = 128) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)


def _image_folder(root: Path, per_class: int = 4, classes=("a", "b")) -> Path:
    for c in classes:
        for i in range(per_class):
            _png(root / c / f"{i}.png", (20, 18), 40 + 60 * i)
    return root


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """The server, a trained run, a finished reproduce experiment and an outside file."""
    root = tmp_path_factory.mktemp("hostile2")
    server = Server(root)
    res = server(["train", "--out", root / "run", *TRAIN], cwd=root)
    assert res["rc"] == 0, res["stderr"]
    res = server(["reproduce", *TINY, "--out", root / "exp"], cwd=root)
    assert res["rc"] == 0, res["stderr"]
    (root / "outside.txt").write_bytes(OUTSIDE)
    (root / "cases").mkdir()
    yield {"root": root, "server": server, "run": root / "run", "exp": root / "exp"}
    server.close()


def _case(w, name: str) -> Path:
    case = w["root"] / "cases" / name
    case.mkdir(parents=True)
    return case


def _refused(res: dict, expect: str) -> str:
    line = _check_one_line_error(res, expect)
    assert res["maxrss_kb"] < PEAK_KB, res["maxrss_kb"]
    return line


# -- nothing followed ------------------------------------------------------------------------------

def _link_lock(folder: Path, target: Path) -> None:
    (folder / ".sgtlab.lock").unlink(missing_ok=True)
    os.symlink(target, folder / ".sgtlab.lock")


@pytest.mark.parametrize("command", ["train-resume", "reproduce", "report"])
def test_a_symlinked_lock_leaves_the_file_it_points_to_byte_identical(w, command):
    case = _case(w, f"lock-{command}")
    outside = case / "thesis.txt"
    outside.write_bytes(OUTSIDE)
    if command == "train-resume":
        folder = case / "run"
        shutil.copytree(w["run"], folder)
        argv = ["train", "--out", folder, "--resume", *TRAIN, "--epochs", "2"]
    else:
        folder = case / "exp"
        shutil.copytree(w["exp"], folder)
        argv = (["reproduce", *TINY, "--out", folder] if command == "reproduce"
                else ["report", folder])
    _link_lock(folder, outside)
    before = snapshot(folder)
    _refused(w["server"](argv, cwd=case), "symbolic link")
    assert outside.read_bytes() == OUTSIDE and outside.stat().st_nlink == 1
    assert snapshot(folder) == before  # nothing trained, rewritten or reported


def test_a_hard_linked_lock_is_refused(w):
    case = _case(w, "lock-hardlink")
    outside = case / "thesis.txt"
    outside.write_bytes(OUTSIDE)
    shutil.copytree(w["run"], case / "run")
    os.link(outside, case / "run" / ".sgtlab.lock")
    _refused(w["server"](["train", "--out", case / "run", "--resume", *TRAIN, "--epochs", "2"], cwd=case),
             "hard links")
    assert outside.read_bytes() == OUTSIDE


def test_a_symlinked_checkpoint_or_result_is_refused(w):
    case = _case(w, "link-files")
    outside = case / "thesis.txt"
    outside.write_bytes(OUTSIDE)
    run = case / "run"
    shutil.copytree(w["run"], run)
    real = case / "real.safetensors"
    os.replace(run / "checkpoint.safetensors", real)
    os.symlink(real, run / "checkpoint.safetensors")
    _refused(w["server"](["train", "--out", run, "--resume", *TRAIN, "--epochs", "2"], cwd=case), "symbolic link")
    os.replace(real, run / "checkpoint.safetensors")  # a real checkpoint, a linked result
    os.symlink(outside, run / "robustness.json")
    _refused(w["server"](["attack", run, "--n", "8", "--attacks", "fgsm", "--eps", "0.1", "--device", "cpu"],
                         cwd=case), "symbolic link")
    os.unlink(run / "robustness.json")
    os.replace(run / "metrics.jsonl", case / "metrics.jsonl")  # appended to in place by training
    os.symlink(outside, run / "metrics.jsonl")
    _refused(w["server"](["train", "--out", run, "--resume", *TRAIN, "--epochs", "2"], cwd=case), "symbolic link")
    assert outside.read_bytes() == OUTSIDE


def test_atomic_writes_and_reads_do_not_follow_links(tmp_path):
    from sgtlab.errors import SgtlabError
    from sgtlab.io import read_json, write_json_atomic

    outside = tmp_path / "outside.json"
    outside.write_text('{"a": 1}')
    os.symlink(outside, tmp_path / "result.json")
    with pytest.raises(SgtlabError, match="symbolic link"):
        write_json_atomic(tmp_path / "result.json", {"b": 2})
    with pytest.raises(SgtlabError, match="symbolic link"):
        read_json(tmp_path / "result.json")
    assert outside.read_text() == '{"a": 1}'


# -- nothing silently replaced ---------------------------------------------------------------------

def test_attack_into_a_finished_reproduce_run_keeps_its_result(w):
    case = _case(w, "attack-into-reproduce")
    run = next((w["exp"] / "runs").iterdir())
    before = {p.name: sha(p) for p in run.iterdir() if p.is_file()}
    _refused(w["server"](["attack", run, "--out", run, "--n", "5", "--attacks", "fgsm", "--eps", "0.1",
                          "--device", "cpu"], cwd=case), "finished run of `sgtlab reproduce`")
    _refused(w["server"](["explain", run, "--out", run, "--n", "4", "--methods", "grad", "--metrics", "entropy",
                          "--device", "cpu", "--no-progress"], cwd=case), "finished run of `sgtlab reproduce`")
    assert {p.name: sha(p) for p in run.iterdir() if p.is_file()} == before


def test_attack_keeps_a_result_of_another_evaluation_unless_overwrite(w):
    case = _case(w, "attack-overwrite")
    run = case / "run"
    shutil.copytree(w["run"], run)
    attack = ["attack", run, "--attacks", "fgsm", "--eps", "0.1", "--device", "cpu", "--no-progress"]
    assert w["server"]([*attack, "--n", "12"], cwd=case)["rc"] == 0
    kept = sha(run / "robustness.json")
    assert w["server"]([*attack, "--n", "12"], cwd=case)["rc"] == 0  # the same evaluation again: fine
    line = _refused(w["server"]([*attack, "--n", "5"], cwd=case), "--overwrite")
    assert "n: 12 -> 5" in line and sha(run / "robustness.json") == kept
    assert w["server"]([*attack, "--n", "5", "--overwrite"], cwd=case)["rc"] == 0
    assert json.loads((run / "robustness.json").read_text())["n"] == 5


def test_explain_keeps_a_result_of_another_evaluation_unless_overwrite(w):
    case = _case(w, "explain-overwrite")
    run = case / "run"
    shutil.copytree(w["run"], run)
    explain = ["explain", run, "--n", "6", "--methods", "grad", "--metrics", "entropy", "--device", "cpu",
               "--no-progress"]
    assert w["server"](explain, cwd=case)["rc"] == 0
    kept = sha(run / "interpretability.json")
    line = _refused(w["server"]([*explain, "--seed", "3"], cwd=case), "--overwrite")
    assert "seed" in line and sha(run / "interpretability.json") == kept
    assert w["server"]([*explain, "--seed", "3", "--overwrite"], cwd=case)["rc"] == 0


def test_attack_says_when_the_data_it_names_has_changed(w):
    """A run trained on `npz:data.npz`: the file replaced by other images, attack refuses to replace
    the result of the old ones."""
    case = _case(w, "data-changed")
    rng = np.random.default_rng(0)
    np.savez(case / "data.npz", x=rng.integers(0, 256, (40, 12, 12), dtype=np.uint8), y=np.arange(40) % 2)
    srv = w["server"]
    assert srv(["train", "--out", "run", "--dataset", "npz:data.npz", *NPZ_TRAIN], cwd=case)["rc"] == 0
    attack = ["attack", "run", "--attacks", "fgsm", "--eps", "0.1", "--device", "cpu", "--no-progress"]
    assert srv(attack, cwd=case)["rc"] == 0
    kept = sha(case / "run" / "robustness.json")
    np.savez(case / "data.npz", x=rng.integers(0, 256, (40, 12, 12), dtype=np.uint8), y=np.arange(40) % 2)
    _refused(srv(attack, cwd=case), "the data it names has changed")
    assert sha(case / "run" / "robustness.json") == kept


def test_a_run_stores_its_data_path_absolute_so_another_folder_reads_the_same_images(w):
    """Trained on `npz:data.npz` from CASE; evaluated from CASE/elsewhere, which holds other (twice
    as many) images under the same relative name: the run's own test images are read (same n, same accuracy)."""
    case = _case(w, "data-absolute")
    rng = np.random.default_rng(0)
    np.savez(case / "data.npz", x=rng.integers(0, 256, (40, 12, 12), dtype=np.uint8), y=np.arange(40) % 2)
    other = case / "elsewhere"
    other.mkdir()
    np.savez(other / "data.npz", x=rng.integers(0, 256, (80, 12, 12), dtype=np.uint8), y=np.arange(80) % 2)
    srv = w["server"]
    assert srv(["train", "--out", "run", "--dataset", "npz:data.npz,test=0.25", *NPZ_TRAIN], cwd=case)["rc"] == 0
    config = json.loads((case / "run" / "config.json").read_text())
    assert config["dataset"] == f"npz:{(case / 'data.npz').resolve()},test=0.25"
    here = srv(["evaluate", "run", "--json", "--device", "cpu"], cwd=case)
    there = srv(["evaluate", "../run", "--json", "--device", "cpu"], cwd=other)
    assert here["rc"] == there["rc"] == 0, there["stderr"]
    assert json.loads(here["stdout"].strip().splitlines()[-1]) == json.loads(there["stdout"].strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["attack", "explain"])
def test_attack_and_explain_take_the_run_lock(w, command):
    from sgtlab.io import folder_lock

    case = _case(w, f"lock-held-{command}")
    run = case / "run"
    shutil.copytree(w["run"], run)
    argv = (["attack", run, "--n", "8", "--attacks", "fgsm", "--eps", "0.1", "--device", "cpu"]
            if command == "attack" else
            ["explain", run, "--n", "4", "--methods", "grad", "--metrics", "entropy", "--device", "cpu"])
    with folder_lock(run, "run folder"):  # another command working in the run
        _refused(w["server"](argv, cwd=case), "in use by another sgtlab command")
    assert not (run / "robustness.json").exists() and not (run / "interpretability.json").exists()


# -- training refuses what cannot give a usable checkpoint ------------------------------------------

def test_training_refuses_an_empty_test_split_and_too_many_classes(w):
    case = _case(w, "unusable")
    _image_folder(case / "one", per_class=1)
    _refused(w["server"](["train", "--out", "a", "--dataset", "folder:one,size=16", *NPZ_TRAIN], cwd=case),
             "test split is empty")
    np.savez(case / "many.npz", x=np.zeros((10, 8, 8), np.uint8), y=np.array([0, 1] * 4 + [100000, 3]))
    _refused(w["server"](["train", "--out", "b", "--dataset", "npz:many.npz", *NPZ_TRAIN], cwd=case),
             "0..99999")
    assert not (case / "a").exists() and not (case / "b").exists()


# -- readers bound what they read -------------------------------------------------------------------

def _npz_cases(case: Path) -> None:
    x = np.zeros((40, 8, 8), np.uint8)
    np.savez(case / "huge-label.npz", x=x, y=np.array([0, 1] * 19 + [2**40, 1], dtype=np.int64))
    np.savez(case / "uint64.npz", x=x, y=np.array([0, 1] * 19 + [2**64 - 1, 1], dtype=np.uint64))
    np.savez(case / "nan.npz", x=np.full((40, 8, 8), np.nan, np.float32), y=np.arange(40) % 2)
    (case / "random.npz").write_bytes(os.urandom(4096))
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**11, 8, 8)})
    with zipfile.ZipFile(case / "lying.npz", "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\0" * 256)
        z.writestr("y.npy", buf.getvalue())


@pytest.mark.parametrize("name,expect", [("huge-label", "0..99999"), ("uint64", "0..99999"),
                                          ("nan", "NaN or infinite"), ("random", "not a .npz file"),
                                          ("lying", "the file is damaged")])
def test_npz_readers_refuse_before_allocating(w, name, expect):
    case = _case(w, f"npz-{name}")
    _npz_cases(case)
    line = _refused(w["server"](["train", "--out", "o", "--dataset", f"npz:{name}.npz", *NPZ_TRAIN], cwd=case),
                    expect)
    assert "pickled" not in line and "out of memory" not in line


def test_npz_uint8_stays_uint8(w):
    """80 MB of uint8 images (a 80 kB file): the statistics are computed in blocks, not on a float
    copy of the split (320 MB more), so the run's peak stays within 3x the images' size."""
    case = _case(w, "npz-big")
    n = 20000
    np.savez_compressed(case / "big.npz", x=np.zeros((n, 1, 64, 64), np.uint8), y=np.arange(n) % 2)
    np.savez_compressed(case / "small.npz", x=np.zeros((200, 1, 64, 64), np.uint8), y=np.arange(200) % 2)
    small = ["--train-subset", "32", "--eval-subset", "16", *NPZ_TRAIN]
    base = w["server"](["train", "--out", "a", "--dataset", "npz:small.npz", *small], cwd=case)
    res = w["server"](["train", "--out", "b", "--dataset", "npz:big.npz", *small], cwd=case)
    assert base["rc"] == 0 and res["rc"] == 0, res["stderr"]
    grown_kb = res["maxrss_kb"] - base["maxrss_kb"]
    assert grown_kb < 3 * n * 64 * 64 // 1024, (res["maxrss_kb"], base["maxrss_kb"])


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_presets_and_results_that_are_fifos_or_devices_are_refused_not_read(w, kind):
    case = _case(w, f"special-{kind}")
    exp = case / "exp"
    shutil.copytree(w["exp"], exp)
    run = next((exp / "runs").iterdir())
    for path in (case / "p.yaml", case / "r.json"):
        os.mkfifo(path) if kind == "fifo" else os.symlink("/dev/zero", path)
    os.replace(case / "r.json", run / "result.json")
    t0 = time.monotonic()
    _refused(w["server"](["reproduce", "--preset", case / "p.yaml", "--dry-run"], cwd=case), "not a regular file")
    _refused(w["server"](["report", run, "--out", case / "rep"], cwd=case), "result.json")
    assert time.monotonic() - t0 < 60


def test_huge_and_thin_images_are_refused_or_cropped_before_decoding(w):
    case = _case(w, "images")
    _image_folder(case / "thin", per_class=3)
    _png(case / "thin" / "a" / "thin.png", (200000, 1))  # 274 bytes: upscaled first it was 200000 x 16 px
    _png(case / "thin" / "b" / "tall.png", (1, 1000000))
    res = w["server"](["train", "--out", "o", "--dataset", "folder:thin,size=16", *NPZ_TRAIN], cwd=case)
    assert res["rc"] == 0 and res["maxrss_kb"] < PEAK_KB, (res["stderr"], res["maxrss_kb"])
    _image_folder(case / "big", per_class=3)
    _png(case / "big" / "a" / "huge.png", (12000, 12000))  # 17 kB, 144 million pixels
    _refused(w["server"](["train", "--out", "p", "--dataset", "folder:big,size=16", *NPZ_TRAIN], cwd=case),
             "the limit is")


def test_a_checkpoint_declaring_a_huge_input_size_or_negative_momentum_is_refused(w):
    from test_hostile_inputs import write_checkpoint_copy

    case = _case(w, "ckpt-sizes")
    write_checkpoint_copy(w["run"], case / "size", meta_edit=lambda m: m["arch"].update(input_size=[4096, 4096]))
    _refused(w["server"](["evaluate", case / "size", "--n", "10"], cwd=case), "input_size")

    def momentum(m):
        m["optimizer"]["param_groups"][0]["momentum"] = -5

    write_checkpoint_copy(w["run"], case / "mom", meta_edit=momentum)
    _refused(w["server"](["train", "--out", case / "mom", "--resume", *TRAIN, "--epochs", "2"], cwd=case),
             "momentum")


def _pcam(folder: Path, x=None, y=None, x_key="x", y_key="y", external: Path | None = None) -> None:
    import h5py

    folder.mkdir(parents=True)
    for split in ("train", "test"):
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            if external is not None:
                f.create_dataset(x_key, shape=(1, 96, 96, 3), dtype=np.uint8, external=[(str(external), 0, 27648)])
            elif x == "group":
                f.create_group(x_key)
            else:
                f[x_key] = np.zeros((1, 96, 96, 3), np.uint8) if x is None else x
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f[y_key] = np.zeros((1, 1, 1, 1), np.uint8) if y is None else y


@pytest.mark.parametrize("variant,expect", [("scalar-y", "single value"), ("group", "a group"),
                                            ("images-key", "no dataset 'x'"), ("external", "outside the file")])
def test_malformed_pcam_files_are_one_line(w, variant, expect):
    pytest.importorskip("h5py")
    case = _case(w, f"pcam-{variant}")
    secret = case / "secret.txt"
    secret.write_bytes(b"root:x:0:0\n" * 3000)
    kw = {"scalar-y": {"y": np.uint8(1)}, "group": {"x": "group"}, "images-key": {"x_key": "images"},
          "external": {"external": secret}}[variant]
    _pcam(case / "data" / "pcam", **kw)
    _refused(w["server"](["train", "--out", "o", "--dataset", "pcam", "--data-dir", case / "data", *NPZ_TRAIN],
                         cwd=case), expect)
    assert not list(case.rglob("x.u8")) and not (case / "o").exists()  # no cache holds the secret's bytes


# -- one line, exit 2 (or 130 for Ctrl-C) -----------------------------------------------------------

def test_names_that_are_not_utf8_are_read_and_printed(w):
    case = _case(w, "not-utf8")
    data = _image_folder(case / "imgs", per_class=3, classes=("a", os.fsdecode(b"caf\xe9")))
    _png(data / "a" / os.fsdecode(b"\xff\xfe.png"), (20, 20))
    (data / "a" / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")
    res = w["server"](["train", "--out", os.fsdecode(b"out\xff"), "--dataset", "folder:imgs,size=16,skip-bad",
                       *NPZ_TRAIN], cwd=case)
    assert res["rc"] == 0 and "Traceback" not in res["stderr"], res["stderr"]
    assert "skipped 1" in res["stderr"] and (case / os.fsdecode(b"out\xff") / "checkpoint.safetensors").exists()


def test_the_crash_log_writer_never_fails(tmp_path, monkeypatch):
    from sgtlab.cli.handler import write_crash_log

    monkeypatch.setenv("SGTLAB_LOG_DIR", str(tmp_path))
    try:
        raise ValueError(os.fsdecode(b"a name \xff"))
    except ValueError:
        path = write_crash_log(["train", "--out", os.fsdecode(b"\xfe\xff")])
    assert path is not None and "\\udcff" in path.read_text()


@pytest.mark.parametrize("where", ["sgtlab.cli:load_imports", "sgtlab.cli:build_parser",
                                   "sgtlab.cli:run_command"])
def test_ctrl_c_at_any_moment_is_one_line_and_130(w, where):
    case = _case(w, "sigint-" + where.split(":")[1])
    res = w["server"](["train", "--out", "o", *TRAIN], cwd=case, interrupt_at=where, interrupt_call=1)
    assert res["rc"] == 130 and "Traceback" not in res["stderr"], res
    assert len(res["stderr"].strip().splitlines()) == 1 and "interrupted" in res["stderr"]


def test_a_plugin_raising_keyboard_interrupt_is_one_line_exit_2(w):
    case = _case(w, "plugin-ki")
    (case / "kbplugin.py").write_text("raise KeyboardInterrupt\n")
    _refused(w["server"](["--import", "kbplugin", "train", "--out", "o", *TRAIN], cwd=case), "KeyboardInterrupt")


@pytest.mark.parametrize("argv,expect", [
    (["reproduce", "--set", "train=null", "--dry-run"], "train must be a mapping"),
    (["reproduce", "--set", "attack=[1]", "--dry-run"], "attack must be a mapping"),
    (["train", "--out", "", *TRAIN], "--out is empty"),
    (["reproduce", "--preset", "dup.yaml", "--dry-run"], "given twice"),
    (["train", "--out", "o", "--dataset", "folder:imgs,size=16,skip-bad=maybe", *NPZ_TRAIN], "true or false"),
])
def test_more_one_line_refusals(w, argv, expect):
    case = _case(w, "more-" + str(abs(hash(tuple(argv))) % 10**8))
    (case / "dup.yaml").write_text("dataset: mnist5k\nmethods: [{method: st}]\ndataset: cifar10\n")
    _image_folder(case / "imgs")
    _refused(w["server"](argv, cwd=case), expect)
    assert not (case / "o").exists()


def test_a_damaged_per_image_table_is_one_line(tmp_path):
    from sgtlab.errors import SgtlabError
    from sgtlab.reporting.data import _per_sample

    path = tmp_path / "robustness_per_sample.csv"
    path.write_text("index,fgsm@0.1\n0,1\nabc,0\n")
    with pytest.raises(SgtlabError, match="damaged"):
        _per_sample(str(path), 0.0)


# -- caches ----------------------------------------------------------------------------------------

def test_the_cache_rebuilds_malformed_labels_and_meta(w):
    case = _case(w, "cache-damage")
    _image_folder(case / "imgs")
    cache = case / "cache"
    env = {"SGTLAB_CACHE": str(cache)}
    argv = ["train", "--out", "o", "--dataset", "folder:imgs,size=16", *NPZ_TRAIN]
    assert w["server"](argv, cwd=case, env=env)["rc"] == 0
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    good = np.load(folder / "y.npy")
    for damage in ("labels-999", "labels-neg", "meta-no-n", "meta-list"):
        if damage.startswith("labels"):
            np.save(folder / "y.npy", np.full_like(good, 999 if damage == "labels-999" else -5))
        else:
            meta = json.loads((folder / "meta.json").read_text())
            meta.pop("n")
            (folder / "meta.json").write_text(json.dumps(meta if damage == "meta-no-n" else [meta]))
        shutil.rmtree(case / "o")
        res = w["server"](argv, cwd=case, env=env)
        assert res["rc"] == 0 and "Traceback" not in res["stderr"], (damage, res["stderr"])
        assert np.array_equal(np.load(folder / "y.npy"), good), damage  # rebuilt from the images


def test_the_cache_is_one_per_resolved_folder_locked_and_cleaned(tmp_path, monkeypatch):
    from sgtlab.data import cache as cache_mod
    from sgtlab.data.folder import ImageFolder

    monkeypatch.setenv("SGTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    _image_folder(tmp_path / "imgs")
    builds: list[Path] = []
    real_build = cache_mod._build

    def counted(*a, **kw):
        builds.append(a[0])
        time.sleep(0.3)  # a slow decode: a second builder arrives meanwhile
        return real_build(*a, **kw)

    monkeypatch.setattr(cache_mod, "_build", counted)
    ImageFolder("folder:imgs,size=16")
    assert len(builds) == 1
    ImageFolder(f"folder:{tmp_path / 'imgs'},size=16")  # the same folder named absolutely: no second decode
    assert len(builds) == 1
    folder = builds[0]
    stale = folder.with_name(f".{folder.name}.tmp-killed")  # a build killed part-way left this
    stale.mkdir()
    (stale / "x.u8").write_bytes(b"x" * 100)
    (folder / "meta.json").unlink()  # unfinished: to be built again
    # two builders at once (threads here, processes in use): one decodes, the other waits and reuses it
    threads = [threading.Thread(target=ImageFolder, args=("folder:imgs,size=16",)) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(builds) == 2 and (folder / "meta.json").exists()
    assert not stale.exists()


def test_skip_bad_is_parsed_strictly_and_skips_dangling_links(w):
    case = _case(w, "skip-bad")
    _image_folder(case / "imgs", per_class=3)
    os.symlink(case / "nowhere.png", case / "imgs" / "a" / "dangling.png")
    srv = w["server"]
    _refused(srv(["train", "--out", "o", "--dataset", "folder:imgs,size=16,skip-bad=false", *NPZ_TRAIN], cwd=case),
             "dangling.png")
    res = srv(["train", "--out", "o", "--dataset", "folder:imgs,size=16,skip-bad", *NPZ_TRAIN], cwd=case)
    assert res["rc"] == 0 and "skipped 1" in res["stderr"], res["stderr"]

