"""Data in every real format, built small here: CIFAR-100 pickles, an image folder (PNG and JPEG of
mixed sizes, one corrupt file), PCAM-layout HDF5 files, .npz arrays; loaded from Python and through
the CLI; the uint8 cache (reused, rebuilt when the source changes) and uint8 batching."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sgtlab.data import DATASETS, TensorData, TensorLoader, dataset_info, from_arrays, load_dataset
from sgtlab.data import cifar, folder
from sgtlab.errors import DataError, SgtlabError

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "sgtlab", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


def train_args(dataset: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", dataset, "--model", "sgt-cnn", "--epochs", "1", "--batch-size", "8",
            "--out", str(out), "--json", "--no-progress", "--device", "cpu", *extra]


# ---------------------------------------------------------------- CIFAR-100

def make_cifar100(root: Path, form: str, n_train: int = 12, n_test: int = 5) -> dict:
    rng = np.random.default_rng(2)
    truth, blobs = {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        coarse = [f // 5 for f in fine]
        blobs[split] = pickle.dumps({"filenames": [f"{i}.png" for i in range(n)], "batch_label": split,
                                     "fine_labels": fine, "coarse_labels": coarse, "data": data}, protocol=4)
        truth[split] = (data, fine, coarse)
    if form == "folder":
        (root / "cifar-100-python").mkdir(parents=True)
        for name, blob in blobs.items():
            (root / "cifar-100-python" / name).write_bytes(blob)
    else:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"cifar-100-python/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return truth


@pytest.mark.parametrize("form", ["folder", "archive"])
def test_cifar100_python_api(tmp_path, form):
    truth = make_cifar100(tmp_path / "cifar100", form)
    for split in ("train", "test"):
        data, fine, coarse = truth[split]
        d = load_dataset("cifar100", split, tmp_path, download=False, verify=False)
        assert d.pixels.dtype == torch.uint8 and d.x.dtype == torch.float32  # stored uint8, float on access
        assert d.x.shape == (len(data), 3, 32, 32) and 0 <= d.x.min() and d.x.max() <= 1
        assert d.y.tolist() == fine
        assert torch.equal(d.pixels.reshape(len(data), -1), torch.from_numpy(data))
        c = load_dataset("cifar100-coarse", split, tmp_path, download=False, verify=False)
        assert c.y.tolist() == coarse and c.name == "cifar100-coarse"
        # the release's names: fine label 0 apple ... 99 worm; coarse 0 aquatic mammals ... 19 vehicles 2
        assert (d.classes[0], d.classes[30], d.classes[99], len(d.classes)) == ("apple", "dolphin", "worm", 100)
        assert (c.classes[0], c.classes[19], len(c.classes)) == ("aquatic_mammals", "vehicles_2", 20)
    info = dataset_info("cifar100")
    assert info.num_classes == 100 and dataset_info("cifar100-coarse").num_classes == 20
    # the official md5 is checked unless verify=False; the message says how to load one's own files
    with pytest.raises(DataError, match="corrupt: md5.*--no-verify"):
        load_dataset("cifar100", "test", tmp_path, download=False)
    # the same restricted unpickler: a pickle that would run code is refused, nothing is executed
    if form == "folder":
        class Evil:
            def __reduce__(self):
                return (os.system, ("touch pwned",))
        (tmp_path / "cifar100" / "cifar-100-python" / "test").write_bytes(pickle.dumps({"data": Evil()}))
        with pytest.raises(DataError, match="not a plain CIFAR-100 batch.*refused global"):
            cifar.load_cifar100("test", tmp_path, download=False, verify=False)
        assert not (tmp_path / "pwned").exists()


def test_cifar100_labels_out_of_range_refused(tmp_path):
    make_cifar100(tmp_path, "folder")
    blob = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 100], "coarse_labels": [0, 0]})
    (tmp_path / "cifar-100-python" / "test").write_bytes(blob)
    with pytest.raises(DataError, match="labels must be 0..99"):
        cifar.load_cifar100("test", tmp_path, download=False, verify=False)


def cli_error(capsys, *args) -> str:
    """Run the CLI in this process; it must refuse with exit 2 and one error line."""
    from sgtlab.cli import main

    capsys.readouterr()
    assert main(list(args)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line or "Traceback" in line]
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_cifar100_cli_no_verify(tmp_path, capsys):
    make_cifar100(tmp_path / "data" / "cifar100", "archive")
    err = cli_error(capsys, *train_args("cifar100", tmp_path / "run", "--data-dir", str(tmp_path / "data")))
    assert "corrupt: md5" in err and "--no-verify" in err
    r = run_cli(*train_args("cifar100", tmp_path / "run", "--data-dir", str(tmp_path / "data"), "--no-verify"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["epoch"] == 1
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["verify"] is False and meta["dataset"] == "cifar100"


# ---------------------------------------------------------------- image folders

def _save(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(arr).save(path)


def make_folder(root: Path, counts=(10, 6, 5), corrupt: bool = True, seed: int = 0) -> Path:
    """Classes a_cls, b_cls, c_cls; PNG and JPEG, RGB and grey, mixed sizes; one corrupt file."""
    rng = np.random.default_rng(seed)
    for c, n in zip(("a_cls", "b_cls", "c_cls"), counts):
        for i in range(n):
            h, w = rng.integers(12, 50, 2)
            arr = rng.integers(0, 256, (h, w, 3) if i % 3 else (h, w), dtype=np.uint8)
            _save(root / c / f"img{i}.{'png' if i % 2 else 'jpg'}", arr)
    (root / "a_cls" / ".DS_Store").write_bytes(b"\0\1")  # hidden files are not images: ignored
    if corrupt:
        (root / "b_cls" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    return root


def is_mapped(path: Path) -> bool:
    """True when this process memory-maps `path` (Linux: /proc/self/maps)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps")
    return str(path.resolve()) in maps.read_text()


def _fresh(name: str) -> TensorData:
    DATASETS.forget(name)  # a new process would resolve it again: so does this
    return load_dataset(name, "train")


def test_image_folder_corrupt_file_named_or_skipped(tmp_path):
    root = make_folder(tmp_path / "imgs")
    with pytest.raises(DataError, match=r"b_cls/broken.jpg is not a readable image.*skip-bad"):
        dataset_info(f"folder:{root},size=16")
    name = f"folder:{root},size=16,skip-bad"
    info = dataset_info(name)
    assert info.shape == (3, 16, 16) and info.num_classes == 3 and info.default_model == "resnet18-cifar"
    tr, te = load_dataset(name, "train"), load_dataset(name, "test")
    assert tr.pixels.dtype == torch.uint8 and tr.x.dtype == torch.float32
    assert len(tr) + len(te) == 21  # 21 images, the corrupt file skipped, .DS_Store ignored
    # stratified: round(0.2 n) of each class in test (at least one), the rest in train
    assert torch.bincount(te.y, minlength=3).tolist() == [2, 1, 1]
    assert torch.bincount(tr.y, minlength=3).tolist() == [8, 5, 4]
    assert 0 <= tr.x.min() and tr.x.max() <= 1 and tr.x.std() > 0.1
    meta = json.loads(next((tmp_path / ".sgtlab-cache").glob("imgs-*/meta.json")).read_text())
    assert len(meta["skipped"]) == 1 and meta["skipped"][0].endswith("broken.jpg")


def test_image_folder_resize_crop_cache_reuse_and_rebuild(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "imgs", corrupt=False)
    # a 40 x 20 image, white in columns 6..33, black at both ends: shorter side 20 -> 8, so 16 x 8,
    # and the centre 8 x 8 crop (source columns 10..29 and the filter's reach) is all white
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 6:34] = 255
    _save(root / "c_cls" / "zz_wide.png", img)
    name = f"folder:{root},size=8"
    d = load_dataset(name, "train")
    te = load_dataset(name, "test")
    everything = torch.cat([d.pixels, te.pixels])
    white = (everything.reshape(len(everything), -1) == 255).all(1)
    assert white.sum() == 1  # that image, exactly white after resize + centre crop
    x_file = next((tmp_path / ".sgtlab-cache").glob("imgs-*/x.u8"))
    assert is_mapped(x_file)
    stamp = x_file.stat().st_mtime_ns
    # second load: the cache is memory-mapped, nothing is decoded again
    monkeypatch.setattr(folder, "decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = _fresh(name)
    assert torch.equal(again.pixels, d.pixels) and torch.equal(again.y, d.y)
    assert x_file.stat().st_mtime_ns == stamp
    # the source changes (one image more): the cache is rebuilt
    monkeypatch.undo()
    _save(root / "a_cls" / "new.png", np.full((9, 9, 3), 7, np.uint8))
    rebuilt = _fresh(name)
    DATASETS.forget(name)
    assert len(rebuilt) + len(load_dataset(name, "test")) == len(d) + len(te) + 1


def test_image_folder_with_its_own_split_and_grey(tmp_path):
    make_folder(tmp_path / "set" / "train", counts=(4, 3, 3), corrupt=False)
    make_folder(tmp_path / "set" / "val", counts=(2, 2, 1), corrupt=False, seed=1)
    name = f"folder:{tmp_path / 'set'},size=12,channels=1"
    info = dataset_info(name)
    assert info.shape == (1, 12, 12) and info.num_classes == 3 and info.default_model == "sgt-cnn"
    tr, te = load_dataset(name, "train"), load_dataset(name, "test")
    assert (len(tr), len(te)) == (10, 5)
    assert te.y.tolist() == [0, 0, 1, 1, 2]  # the val folder, in file order


@pytest.mark.parametrize("spec,message", [
    ("folder:{tmp}/nope", "is not a folder"),
    ("folder:{tmp}/imgs,size=2", "size must be in 8..1024"),
    ("folder:{tmp}/imgs,channels=2", "channels must be 1 or 3"),
    ("folder:{tmp}/imgs,size=big", "size takes a int"),
    ("folder:", "give a path"),
])
def test_image_folder_bad_specs(tmp_path, spec, message):
    (tmp_path / "imgs" / "one").mkdir(parents=True)
    with pytest.raises(SgtlabError, match=message):
        dataset_info(spec.format(tmp=tmp_path))


def test_image_folder_cli_train_attack_and_wrong_size(tmp_path, capsys):
    root = make_folder(tmp_path / "imgs")
    assert "broken.jpg is not a readable image" in cli_error(capsys, *train_args(f"folder:{root},size=16",
                                                                                  tmp_path / "bad"))
    name = f"folder:{root},size=16,skip-bad"
    r = run_cli(*train_args(name, tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    assert "skipped 1 unreadable file" in r.stderr
    r = run_cli("attack", str(tmp_path / "run"), "--attacks", "fgsm,pgd", "--eps", "0.01,0.03", "--json",
                "--no-progress", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["n"] == 4 and set(res["robust_accuracy"]) == {"fgsm", "pgd"}
    # the same classes at another size: the model (built for 16 x 16) refuses in one line
    err = cli_error(capsys, "evaluate", str(tmp_path / "run"), "--dataset", f"folder:{root},size=20,skip-bad")
    assert "sgt-cnn was built for 16x16 images, got 20x20" in err


# ---------------------------------------------------------------- PCAM

def make_pcam(root: Path, n=(24, 10)) -> dict:
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(3)
    truth = {}
    root.mkdir(parents=True, exist_ok=True)
    for split, k in zip(("train", "test"), n):
        x = rng.integers(0, 256, (k, 96, 96, 3), dtype=np.uint8)
        y = rng.integers(0, 2, (k, 1, 1, 1), dtype=np.uint8)
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as f:
            f.create_dataset("x", data=x, chunks=(4, 96, 96, 3), compression="gzip")
        with h5py.File(root / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as f:
            f.create_dataset("y", data=y)
        truth[split] = (x, y.reshape(-1))
    return truth


def test_pcam_hdf5_python_and_cli(tmp_path, monkeypatch):
    from sgtlab.data import pcam

    truth = make_pcam(tmp_path / "pcam")
    monkeypatch.setattr(pcam, "CHUNK", 7)  # several chunks, the last one short
    for split in ("train", "test"):
        d = load_dataset("pcam", split, tmp_path)
        x, y = truth[split]
        assert d.pixels.dtype == torch.uint8 and d.x.shape == (len(x), 3, 96, 96)
        assert torch.equal(d.pixels, torch.from_numpy(x).permute(0, 3, 1, 2)) and d.y.tolist() == y.tolist()
        cache = next((tmp_path / "pcam" / ".sgtlab-cache").glob(f"camelyonpatch_level_2_split_{split}_x.h5-*/x.u8"))
        assert is_mapped(cache)
    r = run_cli(*train_args("pcam", tmp_path / "run", "--data-dir", str(tmp_path)))
    assert r.returncode == 0, r.stderr
    # a file of another layout is named, in one line
    with __import__("h5py").File(tmp_path / "pcam" / "camelyonpatch_level_2_split_test_x.h5", "w") as f:
        f.create_dataset("x", data=np.zeros((10, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"'x' must be uint8 N x 96 x 96 x 3"):
        load_dataset("pcam", "test", tmp_path)
    (tmp_path / "pcam" / "camelyonpatch_level_2_split_test_y.h5").unlink()
    with pytest.raises(DataError, match="missing .*test_y.h5.*zenodo"):
        load_dataset("pcam", "test", tmp_path)


# ---------------------------------------------------------------- npz and arrays

def test_npz_layouts_and_cli(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)  # N x H x W x C
    y = np.repeat(np.arange(4), 10)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    tr, te = load_dataset(f"npz:{tmp_path / 'a.npz'}", "train"), load_dataset(f"npz:{tmp_path / 'a.npz'}", "test")
    assert tr.pixels.dtype == torch.uint8 and tr.shape == (3, 12, 12) and (len(tr), len(te)) == (32, 8)
    assert torch.bincount(te.y).tolist() == [2, 2, 2, 2]
    # the same images come back, channels first, each with its label
    rows = {x[i].transpose(2, 0, 1).tobytes(): y[i] for i in range(40)}
    assert all(rows[tr.pixels[i].numpy().tobytes()] == tr.y[i] for i in range(len(tr)))
    # float N x C x H x W with its own split
    xf = rng.random((6, 1, 10, 10)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x_train=xf, y_train=np.arange(6) % 2, x_test=xf[:2], y_test=[0, 1])
    b = load_dataset(f"npz:{tmp_path / 'b.npz'}", "train")
    assert b.pixels.dtype == torch.float32 and torch.equal(b.x, torch.from_numpy(xf))
    assert dataset_info(f"npz:{tmp_path / 'b.npz'}").default_model == "sgt-cnn"
    # from Python, the same rules
    parts = from_arrays(torch.from_numpy(x), torch.from_numpy(y), "mine")
    assert torch.equal(parts["train"].pixels, tr.pixels)
    r = run_cli(*train_args(f"npz:{tmp_path / 'a.npz'}", tmp_path / "run"))
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.full((4, 8, 8), 2.0), "y": [0, 1, 0, 1]}, r"float images must lie in \[0, 1\]"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": [0, 1]}, "4 images but labels"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": [0.5, 1, 0, 1]}, "labels must be integers"),
    ({"x": np.zeros((4, 5, 8, 8), np.uint8), "y": [0, 1, 0, 1]}, "C = 1 or 3"),
    ({"images": np.zeros(3)}, "needs arrays 'x' and 'y'"),
    ({"x": np.array([{"a": 1}] * 4, dtype=object), "y": [0, 1, 0, 1]}, "object array"),
])
def test_npz_bad_contents_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        dataset_info(f"npz:{tmp_path / 'bad.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"PK\3\4 not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        dataset_info(f"npz:{tmp_path / 'junk.npz'}")


# ---------------------------------------------------------------- uint8 batching

def test_uint8_loader_gives_the_float_batches():
    """The uint8 path (converted per batch) against the plain float path: same batches, same values,
    with and without augmentation."""
    from sgtlab.data.augment import crop_flip
    from sgtlab.evaluate import accuracy

    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(50) % 5
    a, b = TensorData(u8, y, "u8"), TensorData(u8.float() / 255, y, "f32")
    for augment in (None, crop_flip):
        la = TensorLoader(a, 16, shuffle=True, seed=3, augment=augment)
        lb = TensorLoader(b, 16, shuffle=True, seed=3, augment=augment)
        for (xa, ya, ia), (xb, yb, ib) in zip(la, lb):
            assert xa.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ia, ib)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 5))
    assert accuracy(model, a, batch_size=7) == accuracy(model, b, batch_size=7)
    assert torch.equal(a.subset(5).x, b.x[:5])
