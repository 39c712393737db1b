"""The data readers of issue 28's mutation round (folder, arrays, pcam, cache): layouts, bounds,
the cache's validity checks and statistics, each against values computed here."""
from __future__ import annotations

import io as _io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sgtlab.data import arrays
from sgtlab.data.arrays import from_arrays, read_npz, to_labels, to_nchw
from sgtlab.errors import DataError
from sgtlab.validate import MAX_CLASSES


# -- arrays ----------------------------------------------------------------------------------------

def test_image_layouts_become_nchw():
    x = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    out = to_nchw(x, "t")
    assert out.shape == (2, 3, 4, 5) and out[1, 2, 3, 4] == x[1, 3, 4, 2]
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    assert to_nchw(x[..., :1], "t").shape == (2, 1, 4, 5)
    assert to_nchw(x[..., 0], "t").shape == (2, 1, 4, 5)
    first = np.zeros((2, 3, 4, 3), np.uint8)  # C first and last: taken as N x C x H x W
    assert to_nchw(first, "t").shape == (2, 3, 4, 3)
    assert to_nchw(np.zeros((2, 1, 4, 5), np.uint8), "t").shape == (2, 1, 4, 5)
    with pytest.raises(DataError, match=r"^t: images of shape \(2, 4, 5, 6\): expected N x H x W x C"):
        to_nchw(np.zeros((2, 4, 5, 6), np.uint8), "t")
    with pytest.raises(DataError, match=r"^t: images must have 3 or 4 dimensions, got shape \(2, 4\)"):
        to_nchw(np.zeros((2, 4), np.uint8), "t")
    with pytest.raises(DataError, match="must have 3 or 4 dimensions"):
        to_nchw(np.zeros((1, 1, 1, 1, 1), np.uint8), "t")


def test_float_images_are_float32_in_the_unit_interval():
    x = np.linspace(0, 1, 2 * 3 * 3).reshape(2, 3, 3)
    out = to_nchw(x, "t")
    assert out.dtype == np.float32 and out.shape == (2, 1, 3, 3) and out.max() == 1 and out.min() == 0
    with pytest.raises(DataError, match=r"^t: images must be uint8 \(0..255\) or float in \[0, 1\], got int16"):
        to_nchw(np.zeros((2, 3, 3), np.int16), "t")
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[0, 0, 0] = bad
        with pytest.raises(DataError, match="hold NaN or infinite values"):
            to_nchw(y, "t")
    with pytest.raises(DataError, match=r"must lie in \[0, 1\], got values in \[0, 1.5\]"):
        to_nchw(x * 1.5, "t")
    with pytest.raises(DataError, match=r"got values in \[-0.5, 0.5\]"):
        to_nchw(x - 0.5, "t")
    assert to_nchw(np.zeros((0, 3, 3)), "t").shape == (0, 1, 3, 3)


def test_labels_are_checked_before_conversion():
    assert to_labels(np.array([[1], [0]]), 2, "t").tolist() == [1, 0]
    out = to_labels(np.array([True, False]), 2, "t")
    assert out.dtype == np.int64 and out.tolist() == [1, 0]
    assert to_labels(np.array([0, MAX_CLASSES - 1], np.uint32), 2, "t").tolist() == [0, MAX_CLASSES - 1]
    assert to_labels(np.zeros(0, np.int64), 0, "t").shape == (0,)
    with pytest.raises(DataError, match=r"^t: 2 images but labels of shape \(2, 2\)"):
        to_labels(np.zeros((2, 2), np.int64), 2, "t")
    with pytest.raises(DataError, match=r"^t: 3 images but labels of shape \(2,\)"):
        to_labels(np.zeros(2, np.int64), 3, "t")
    with pytest.raises(DataError, match="^t: labels must be integers, got float64"):
        to_labels(np.zeros(2), 2, "t")
    with pytest.raises(DataError, match=f"^t: labels must be integers in 0..{MAX_CLASSES - 1}, got -1..1"):
        to_labels(np.array([-1, 1]), 2, "t")
    with pytest.raises(DataError, match=f"got 0..{MAX_CLASSES}$"):
        to_labels(np.array([0, MAX_CLASSES]), 2, "t")
    with pytest.raises(DataError, match="got 0..18446744073709551615"):
        to_labels(np.array([0, 2**64 - 1], np.uint64), 2, "t")


def test_from_arrays_splits_or_takes_the_test_split():
    x = torch.rand(20, 1, 4, 4)
    y = torch.arange(20) % 2
    d = from_arrays(x, y, "mine")
    assert len(d["train"]) == 16 and len(d["test"]) == 4 and d["test"].name == "mine"
    assert sorted(d["test"].y.tolist()) == [0, 0, 1, 1]
    assert len(from_arrays(x, y, test=0.5)["test"]) == 10
    both = torch.cat([d["train"].pixels, d["test"].pixels])
    assert sorted(both.flatten().tolist()) == sorted(x.flatten().tolist())  # every image once
    d = from_arrays(x.numpy(), y.numpy(), "m", x_test=x[:3], y_test=y[:3])
    assert len(d["train"]) == 20 and torch.equal(d["test"].pixels, x[:3]) and d["test"].y.tolist() == [0, 1, 0]
    with pytest.raises(DataError, match=r"^m: train images are \(1, 4, 4\), test images \(1, 4, 5\)"):
        from_arrays(x, y, "m", x_test=torch.rand(3, 1, 4, 5), y_test=y[:3])
    with pytest.raises(DataError, match=r"^m \(test\): 3 images but labels"):
        from_arrays(x, y, "m", x_test=x[:3], y_test=y[:2])
    with pytest.raises(DataError, match=r"^m \(test\): images must have"):
        from_arrays(x, y, "m", x_test=torch.rand(3, 4), y_test=y[:3])


def _npz(path: Path, **arrs) -> Path:
    np.savez(path, **arrs)
    return path


def test_npz_files_are_checked_before_they_are_read(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (10, 4, 4), dtype=np.uint8)
    y = np.arange(10) % 2
    d = read_npz(_npz(tmp_path / "a.npz", x=x, y=y), "n", 0.3)
    assert len(d["test"]) == 4 and d["train"].pixels.dtype == torch.uint8
    d = read_npz(_npz(tmp_path / "b.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2], x=x[:1], y=y[:1]), "n", 0.3)
    assert len(d["train"]) == 10 and len(d["test"]) == 2  # the given split wins
    with pytest.raises(DataError, match=r"^n: .*c.npz holds x_train, y_train; it needs arrays 'x' and 'y'"):
        read_npz(_npz(tmp_path / "c.npz", x_train=x, y_train=y), "n", 0.2)
    with pytest.raises(DataError, match="holds nothing"):
        read_npz(_npz(tmp_path / "e.npz"), "n", 0.2)
    with pytest.raises(DataError, match=r"^n: no file .*missing.npz"):
        read_npz(tmp_path / "missing.npz", "n", 0.2)
    (tmp_path / "t.npz").write_bytes(b"PX" + b"\0" * 50)
    with pytest.raises(DataError, match="is not a .npz file .no zip header."):
        read_npz(tmp_path / "t.npz", "n", 0.2)
    (tmp_path / "z.npz").write_bytes(b"PK" + b"\0" * 50)
    with pytest.raises(DataError, match=r"^n: .*z.npz is not a readable .npz file"):
        read_npz(tmp_path / "z.npz", "n", 0.2)
    with pytest.raises(DataError, match="holds an object array .pickled Python objects."):
        read_npz(_npz(tmp_path / "o.npz", x=np.array([None, 1], dtype=object), y=y[:2]), "n", 0.2)


def test_a_lying_array_header_is_refused_before_allocating(tmp_path):
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((2, 3), np.float32))
    raw = buf.getvalue().replace(b"(2, 3)", b"(9, 3)")
    with zipfile.ZipFile(tmp_path / "l.npz", "w") as z:
        z.writestr("x.npy", raw)
        z.writestr("y.npy", _npy(np.zeros(2, np.int64)))
        z.writestr("notes.txt", b"not an array")
    with pytest.raises(DataError, match=r"array 'x' declares shape \(9, 3\) \(108 bytes\) but holds 24 bytes"):
        read_npz(tmp_path / "l.npz", "n", 0.2)
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((2, 3), np.float32), version=(2, 0))
    with zipfile.ZipFile(tmp_path / "v2.npz", "w") as z:
        z.writestr("x.npy", buf.getvalue().replace(b"(2, 3)", b"(4, 3)"))
    with pytest.raises(DataError, match=r"declares shape \(4, 3\) \(48 bytes\) but holds 24 bytes"):
        read_npz(tmp_path / "v2.npz", "n", 0.2)


def _npy(a: np.ndarray) -> bytes:
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, a)
    return buf.getvalue()


def test_channel_statistics_match_numpy_by_blocks():
    rng = np.random.default_rng(1)
    u8 = torch.from_numpy(rng.integers(0, 256, (7, 3, 2, 2), dtype=np.uint8))
    mean, std = arrays._mean_std(u8, block=3)
    f = u8.numpy().astype(np.float64) / 255
    want_m = f.transpose(1, 0, 2, 3).reshape(3, -1).mean(1)
    want_s = f.transpose(1, 0, 2, 3).reshape(3, -1).std(1, ddof=1)
    assert mean == tuple(round(v, 4) for v in want_m) and std == tuple(round(v, 4) for v in want_s)
    fl = torch.from_numpy(f.astype(np.float32))
    assert arrays._mean_std(fl, block=2) == (mean, std)
    assert arrays._mean_std(fl[:1]) == ((0.5,) * 3, (0.25,) * 3)
    assert arrays._mean_std(torch.full((2, 1, 2, 2), 0.5)) == ((0.5,), (0.001,))


def test_resolve_gives_the_info_of_an_npz(tmp_path):
    x = np.random.default_rng(0).random((12, 3, 8, 6)).astype(np.float32)
    y = np.array([0, 1, 2] * 4)
    info = arrays.resolve(f"npz:{_npz(tmp_path / 'a.npz', x=x, y=y)},test=0.25")
    assert info.shape == (3, 8, 6) and info.num_classes == 3 and info.default_model == "resnet18-cifar"
    assert info.description == f"arrays from {tmp_path / 'a.npz'}: 9 train / 3 test images"
    assert len(info.loader("test")) == 3 and len(info.loader("train")) == 9
    assert info.mean == arrays._mean_std(info.loader("train").pixels)[0]
    one = arrays.resolve(f"npz:{_npz(tmp_path / 'b.npz', x=x[:4, :1], y=np.zeros(4, int))}")
    assert one.num_classes == 2 and one.default_model == "sgt-cnn"  # at least 2 classes
    # labels of the test split count too
    t = arrays.resolve(f"npz:{_npz(tmp_path / 'c.npz', x_train=x, y_train=y, x_test=x[:1], y_test=[7])}")
    assert t.num_classes == 8
    with pytest.raises(DataError, match="^npz:.*: the test split is empty"):
        arrays.resolve(f"npz:{_npz(tmp_path / 'd.npz', x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])}")
    with pytest.raises(DataError, match="^npz:.*: the train split is empty"):
        arrays.resolve(f"npz:{_npz(tmp_path / 'e.npz', x_train=x[:0], y_train=y[:0], x_test=x, y_test=y)}")


def test_npy_members_of_format_3_are_refused_in_one_line(tmp_path):
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(2, np.float32), version=(3, 0))
    with zipfile.ZipFile(tmp_path / "v3.npz", "w") as z:
        z.writestr("x.npy", buf.getvalue())
    with pytest.raises(DataError, match=r"v3.npz is not a readable .npz file \(an .npy member of format version 3.0\)"):
        read_npz(tmp_path / "v3.npz", "n", 0.2)


# -- pcam ------------------------------------------------------------------------------------------

h5py = pytest.importorskip("h5py")
from sgtlab.data import pcam  # noqa: E402


def _h5(path: Path, key: str, value=None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        if value is None:
            f.create_group(key)
        else:
            f.create_dataset(key, data=value, **kw)
    return path


def _pcam_split(folder: Path, split: str, n: int = 5, seed: int = 0, y=None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
    y = (np.arange(n) % 2).reshape(n, 1, 1, 1) if y is None else y
    xn, yn = pcam.files(split)
    _h5(folder / xn, "x", x)
    _h5(folder / yn, "y", y)
    return x, np.asarray(y).reshape(-1)


def test_pcam_splits_are_read_in_chunks_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(pcam, "CHUNK", 2)
    x, y = _pcam_split(tmp_path / "pcam", "train", 5)
    xt, yt = _pcam_split(tmp_path, "test", 3, seed=1)
    d = pcam.load_pcam("train", tmp_path)
    assert d.pixels.dtype == torch.uint8 and d.name == "pcam"
    assert np.array_equal(d.pixels.numpy(), x.transpose(0, 3, 1, 2)) and d.y.tolist() == y.tolist()
    t = pcam.load_pcam("test", tmp_path)  # in DIR itself
    assert np.array_equal(t.pixels.numpy(), xt.transpose(0, 3, 1, 2)) and t.y.tolist() == yt.tolist()
    assert pcam.files("valid") == ("camelyonpatch_level_2_split_valid_x.h5", "camelyonpatch_level_2_split_valid_y.h5")
    with pytest.raises(DataError, match="^PCAM splits are train, test, valid, got 'val'"):
        pcam.load_pcam("val", tmp_path)
    with pytest.raises(DataError, match=r"^pcam: missing camelyonpatch_level_2_split_valid_x.h5 and .*_valid_y.h5 in .*pcam or "):
        pcam.load_pcam("valid", tmp_path)
    assert pcam.locate("train", tmp_path) == tuple(tmp_path / "pcam" / n for n in pcam.files("train"))


def test_pcam_says_to_gunzip_what_it_finds_compressed(tmp_path):
    xn, yn = pcam.files("test")
    (tmp_path / "pcam").mkdir()
    (tmp_path / "pcam" / (xn + ".gz")).write_bytes(b"x")
    (tmp_path / (yn + ".gz")).write_bytes(b"x")
    with pytest.raises(DataError, match=rf"\({xn}.gz, {yn}.gz found: gunzip it\); download"):
        pcam.locate("test", tmp_path)
    with pytest.raises(DataError) as e:
        pcam.locate("train", tmp_path)
    assert "gunzip it" not in str(e.value) and "zenodo.org/record/2546921" in str(e.value)


@pytest.mark.parametrize("key, value, kw, expect", [
    ("x", None, {}, "has a group, not a dataset 'x' .it holds x.; is it a PCAM file"),
    ("z", np.zeros(3, np.uint8), {}, "has no dataset 'x' .it holds z.; is it a PCAM file"),
    ("x", np.uint8(3), {}, "'x' is a single value, not an array of images"),
])
def test_pcam_data_sets_must_be_arrays_in_the_file(tmp_path, key, value, kw, expect):
    p = _h5(tmp_path / "f.h5", key, value, **kw)
    with pytest.raises(DataError, match=expect):
        pcam._open(p, "x")


def test_pcam_refuses_scalar_labels_external_storage_truncation_and_non_hdf5(tmp_path):
    p = _h5(tmp_path / "y.h5", "y", np.int64(1))
    with pytest.raises(DataError, match="'y' is a single value, not an array of labels"):
        pcam._open(p, "y")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"s" * 64)
    with h5py.File(tmp_path / "e.h5", "w") as f:
        f.create_dataset("x", shape=(64,), dtype=np.uint8, external=[(str(outside), 0, 64)])
    with pytest.raises(DataError, match="'x' is stored outside the file"):
        pcam._open(tmp_path / "e.h5", "x")
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("x", shape=(1000,), dtype=np.uint8)  # declared, never written: no storage
    with pytest.raises(DataError, match=r"'x' declares \(1000,\) \(1000 bytes\) but the file holds 0"):
        pcam._open(tmp_path / "t.h5", "x")
    with h5py.File(tmp_path / "c.h5", "w") as f:  # compressed: the storage is smaller, and that is fine
        f.create_dataset("x", data=np.zeros(1000, np.uint8), compression="gzip")
    f, d = pcam._open(tmp_path / "c.h5", "x")
    assert d.shape == (1000,)
    f.close()
    f, d = pcam._open(_h5(tmp_path / "z.h5", "x", np.zeros(0, np.uint8)), "x")  # empty: nothing to hold
    f.close()
    (tmp_path / "n.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="n.h5 is not a readable HDF5 file"):
        pcam._open(tmp_path / "n.h5", "x")


def test_pcam_images_and_labels_are_checked(tmp_path):
    def chunks(x, y):
        _h5(tmp_path / "x.h5", "x", x)
        _h5(tmp_path / "y.h5", "y", y)
        return list(pcam._chunks(tmp_path / "x.h5", tmp_path / "y.h5"))

    x = np.zeros((2, 96, 96, 3), np.uint8)
    got = chunks(x, np.array([1, 0]))
    assert len(got) == 1 and got[0][0].shape == (2, 3, 96, 96) and got[0][1].dtype == np.int64
    for bad_x in (x.astype(np.float32), x[:, :, :, :1], x[0]):
        with pytest.raises(DataError, match="'x' must be uint8 N x 96 x 96 x 3"):
            chunks(bad_x, np.array([1, 0]))
    for bad_y in (np.array([1]), np.zeros((2, 2), np.int64), np.array([0.0, 1.0])):
        with pytest.raises(DataError, match=r"'y' must hold one integer label per image \(2\)"):
            chunks(x, bad_y)
    with pytest.raises(DataError, match=r"labels must be 0 or 1, got \[0, 2\]"):
        chunks(x, np.array([2, 0]))
    with pytest.raises(DataError, match=r"y.h5 has no dataset 'y'"):
        _h5(tmp_path / "x.h5", "x", x)
        _h5(tmp_path / "y.h5", "x", np.array([0, 1]))
        list(pcam._chunks(tmp_path / "x.h5", tmp_path / "y.h5"))


# -- the uint8 cache -------------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402

from sgtlab.data import cache  # noqa: E402


def _images(n: int, c: int = 2, h: int = 3, w: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def _chunks(x: np.ndarray, y: np.ndarray, size: int):
    for s in range(0, len(x), size):
        yield x[s:s + size], y[s:s + size]


def test_a_built_cache_holds_the_images_labels_and_statistics(tmp_path):
    x, y = _images(7), np.array([0, 1, 2, 0, 1, 2, 0])
    folder = tmp_path / "c" / "data-abc"
    c = cache.build_cache(folder, "fp1", (2, 3, 4), _chunks(x, y, 3), {"classes": ["a", "b", "c"], "source": "s"})
    assert np.array_equal(c.x.numpy(), x) and c.y.dtype == torch.int64 and c.y.tolist() == y.tolist()
    f = x.astype(np.float64) / 255
    assert np.allclose(c.stats[:, :, 0], f.mean((2, 3))) and np.allclose(c.stats[:, :, 1], (f * f).mean((2, 3)))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta == {"classes": ["a", "b", "c"], "source": "s", "version": cache.VERSION, "fingerprint": "fp1",
                    "n": 7, "shape": [2, 3, 4]}
    assert c.meta == meta
    assert sorted(os.listdir(folder)) == ["meta.json", "stats.npy", "x.u8", "y.npy"]
    assert (folder / "x.u8").stat().st_size == x.size
    assert sorted(os.listdir(folder.parent)) == [".data-abc.lock", "data-abc"]  # no temporaries left
    assert oct(folder.stat().st_mode & 0o777) == "0o755"
    again = cache.open_cache(folder, "fp1")
    assert np.array_equal(again.x.numpy(), x) and again.meta == meta
    assert cache.open_cache(folder, "fp2") is None
    assert cache.build_cache(folder, "fp1", (2, 3, 4), iter(()), {}).meta == meta  # found: no rebuild
    # a changed source: rebuilt in place, the old one moved aside and removed
    c2 = cache.build_cache(folder, "fp2", (2, 3, 4), _chunks(x[:2], y[:2], 5), {})
    assert len(c2.y) == 2 and c2.meta["fingerprint"] == "fp2"
    assert sorted(os.listdir(folder.parent)) == [".data-abc.lock", "data-abc"]


def test_image_statistics_by_block_match_the_whole():
    x = _images(9, 3, 5, 2, seed=3)
    whole = cache.image_stats(x, block=100)
    assert np.allclose(cache.image_stats(x, block=2), whole)
    f = x.astype(np.float64) / 255
    assert np.allclose(whole[:, :, 0], f.mean((2, 3))) and np.allclose(whole[:, :, 1], (f * f).mean((2, 3)))
    assert whole.shape == (9, 3, 2)


def test_mean_and_std_of_any_subset_from_the_per_image_statistics(tmp_path):
    x = _images(6, 2, 4, 4, seed=5)
    c = cache.build_cache(tmp_path / "k", "f", (2, 4, 4), _chunks(x, np.zeros(6, np.int64), 6), {})
    f = x.astype(np.float64) / 255
    idx = np.array([0, 2, 5])
    m, s = c.mean_std(idx)
    sub = f[idx].transpose(1, 0, 2, 3).reshape(2, -1)
    assert m == tuple(round(v, 4) for v in sub.mean(1)) and s == tuple(round(v, 4) for v in sub.std(1))
    m, s = c.mean_std()
    assert m == tuple(round(v, 4) for v in f.transpose(1, 0, 2, 3).reshape(2, -1).mean(1))
    assert c.mean_std(np.array([], dtype=np.int64)) == ((0.5, 0.5), (0.25, 0.25))
    flat = cache.build_cache(tmp_path / "f", "f", (1, 2, 2), _chunks(np.full((2, 1, 2, 2), 7, np.uint8),
                                                                     np.zeros(2, np.int64), 2), {})
    assert flat.mean_std()[1] == (0.001,)  # a constant channel: the floor, not 0


def test_an_empty_cache_opens_with_no_images(tmp_path):
    c = cache.build_cache(tmp_path / "e", "f", (1, 2, 2), iter(()), {"classes": ["a", "b"]})
    assert c.x.shape == (0, 1, 2, 2) and c.x.dtype == torch.uint8 and len(c.y) == 0 and c.stats.shape == (0, 1, 2)
    assert cache.open_cache(tmp_path / "e", "f").x.shape == (0, 1, 2, 2)


def _built(tmp_path: Path, n: int = 3, classes=("a", "b")) -> Path:
    folder = tmp_path / "b"
    cache.build_cache(folder, "fp", (1, 2, 2), _chunks(_images(n, 1, 2, 2), np.arange(n) % 2, n),
                      {"classes": list(classes)})
    return folder


def _edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("changes", [
    {"n": -1}, {"n": True}, {"n": "3"}, {"n": 4}, {"n": 2}, {"shape": [1, 2]}, {"shape": [1, 2, 2, 1]},
    {"shape": "1,2,2"}, {"shape": [1, 2, True]}, {"shape": [1, 2, 0]}, {"shape": [1, 2, 4097]}, {"shape": [1, 2, 2.0]},
    {"classes": []}, {"classes": "ab"}, {"classes": ["a"]}, {"version": cache.VERSION + 1}, {"fingerprint": "other"},
])
def test_a_cache_whose_meta_does_not_match_its_files_is_not_used(tmp_path, changes):
    folder = _built(tmp_path)
    assert cache.open_cache(folder, "fp") is not None
    _edit_meta(folder, **changes)
    assert cache.open_cache(folder, "fp") is None


def test_meta_limits_are_inclusive(tmp_path):
    folder = tmp_path / "m"
    x = _images(1, 1, 1, 4096)
    cache.build_cache(folder, "fp", (1, 1, 4096), _chunks(x, np.zeros(1, np.int64), 1), {"classes": None})
    assert cache.open_cache(folder, "fp") is not None  # 4096 and 1 are allowed sizes; classes may be null
    assert cache._read_meta(folder)["shape"] == [1, 1, 4096]
    many = [str(i) for i in range(cache.MAX_CLASSES)]
    _edit_meta(folder, classes=many)
    assert cache._read_meta(folder) is not None
    _edit_meta(folder, classes=many + ["x"])
    assert cache._read_meta(folder) is None
    _edit_meta(folder, classes=["a"], n=0)
    assert cache._read_meta(folder)["n"] == 0


def test_damaged_cache_files_are_not_used(tmp_path):
    folder = _built(tmp_path)
    (folder / "meta.json").write_text("[1, 2]")
    assert cache.open_cache(folder, "fp") is None
    (folder / "meta.json").write_text("{not json")
    assert cache.open_cache(folder, "fp") is None
    folder = _built(tmp_path / "2")
    (folder / "meta.json").rename(folder / "m.json")
    os.symlink(folder / "m.json", folder / "meta.json")
    assert cache.open_cache(folder, "fp") is None  # a link is not followed
    for name, value in (("y.npy", np.array([0, 1])), ("y.npy", np.array([0.0, 1.0, 0.0])),
                        ("y.npy", np.array([0, 2, 1])), ("y.npy", np.array([0, -1, 1])),
                        ("stats.npy", np.zeros((3, 1, 2), np.float32)), ("stats.npy", np.zeros((3, 2, 2))),
                        ("stats.npy", np.zeros((2, 1, 2)))):
        folder = _built(tmp_path / f"{name}-{value.dtype}-{value.shape}-{value.min()}-{value.max()}")
        np.save(folder / name, value)
        assert cache.open_cache(folder, "fp") is None, (name, value)
    folder = _built(tmp_path / "x")
    with open(folder / "x.u8", "ab") as f:
        f.write(b"\0")
    assert cache.open_cache(folder, "fp") is None
    folder = _built(tmp_path / "nox")
    (folder / "x.u8").unlink()
    assert cache.open_cache(folder, "fp") is None
    folder = _built(tmp_path / "big")
    with open(folder / "meta.json", "ab") as f:
        f.truncate((1 << 26) + 1)
    assert cache._read_meta(folder) is None


def test_labels_are_bounded_by_the_classes_or_the_limit():
    meta = {"classes": ["a", "b"]}
    assert cache._labels_ok(np.array([0, 1]), 2, meta)
    assert not cache._labels_ok(np.array([0, 2]), 2, meta)
    assert cache._labels_ok(np.array([0, 2]), 2, {})
    assert cache._labels_ok(np.array([cache.MAX_CLASSES - 1]), 1, {"classes": None})
    assert not cache._labels_ok(np.array([cache.MAX_CLASSES]), 1, {})
    assert not cache._labels_ok(np.array([-1, 0]), 2, {})
    assert not cache._labels_ok(np.array([0, 1]), 3, meta)
    assert not cache._labels_ok(np.array([[0, 1]]), 2, meta)
    assert cache._labels_ok(np.zeros(0, np.int64), 0, meta)


def test_a_wrong_chunk_is_an_internal_error_and_leaves_nothing(tmp_path):
    folder = tmp_path / "w" / "c"
    with pytest.raises(DataError, match=r"internal: a chunk of uint8 \(1, 2, 3\), expected uint8 \(1, 2, 2\)"):
        cache.build_cache(folder, "fp", (1, 2, 2), iter([(np.zeros((1, 1, 2, 3), np.uint8), [0])]), {})
    with pytest.raises(DataError, match=r"internal: a chunk of float32"):
        cache.build_cache(folder, "fp", (1, 2, 2), iter([(np.zeros((1, 1, 2, 2), np.float32), [0])]), {})
    assert os.listdir(folder.parent) == [".c.lock"]


def test_stale_temporaries_of_this_cache_only_are_removed(tmp_path):
    folder = tmp_path / "c"
    keep = [tmp_path / ".other.tmp-1", tmp_path / ".c.tmpx", tmp_path / "c.tmp-1"]
    gone = [tmp_path / ".c.tmp-1", tmp_path / ".c.old-99"]
    for p in keep + gone:
        p.mkdir()
        (p / "x").write_text("x")
    (tmp_path / ".c.tmp-file").write_text("a file, not a build")
    cache.build_cache(folder, "fp", (1, 1, 1), _chunks(_images(1, 1, 1, 1), np.zeros(1, np.int64), 1), {})
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)
    assert (tmp_path / ".c.tmp-file").exists()


def test_a_linked_build_lock_is_refused(tmp_path):
    target = tmp_path / "t"
    target.write_text("keep")
    os.symlink(target, tmp_path / ".c.lock")
    with pytest.raises(DataError, match=r"^cannot lock the cache .*c \(.*: .*\.c\.lock\); remove that file or set SGTLAB_CACHE"):
        cache.build_cache(tmp_path / "c", "fp", (1, 1, 1), iter(()), {})
    assert target.read_text() == "keep"


def test_fingerprints_follow_resolved_paths_sizes_and_times(tmp_path, monkeypatch):
    a = tmp_path / "a.png"
    a.write_bytes(b"1")
    fp = cache.fingerprint([a], "k")
    monkeypatch.chdir(tmp_path)
    assert cache.fingerprint([Path("a.png")], "k") == fp
    assert cache.fingerprint([a], "other") != fp and cache.fingerprint([a]) != fp
    missing = cache.fingerprint([tmp_path / "gone"], "k")
    assert missing != fp and missing == cache.fingerprint([tmp_path / "gone"], "k")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    assert cache.fingerprint([tmp_path / "dangling"], "k") != cache.fingerprint([tmp_path / "dangling2"], "k")
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert cache.fingerprint([a], "k") != fp
    t = cache.fingerprint([a], "k")
    a.write_bytes(b"12")
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert cache.fingerprint([a], "k") != t  # the size
    import hashlib
    h = hashlib.sha1(f"v{cache.VERSION}|k".encode())
    assert cache.fingerprint([], "k") == h.hexdigest()


def test_the_cache_lives_in_sgtlab_cache_beside_the_data_or_in_the_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SGTLAB_CACHE", raising=False)
    (tmp_path / "data").mkdir()
    d = cache.cache_dir(tmp_path / "data", "size=8")
    assert d.parent == tmp_path / ".sgtlab-cache" and d.name.startswith("data-") and len(d.name) == len("data-") + 12
    assert os.listdir(tmp_path / ".sgtlab-cache") == []  # the probe is gone
    assert cache.cache_dir(tmp_path / "data", "size=16") != d
    monkeypatch.chdir(tmp_path)
    assert cache.cache_dir(Path("data"), "size=8") == d  # resolved
    monkeypatch.setenv("SGTLAB_CACHE", "~/cc")
    assert cache.cache_root(tmp_path) == Path.home() / "cc"
    monkeypatch.setenv("SGTLAB_CACHE", "")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / ".sgtlab-cache").write_text("a file in the way")
    assert cache.cache_root(tmp_path / "ro") == Path.home() / ".cache" / "sgtlab" / "cache"


# -- image folders ---------------------------------------------------------------------------------

from PIL import Image  # noqa: E402

from sgtlab.data import folder as fo  # noqa: E402


def _img(path: Path, a: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, format=fmt)
    return path


def _tree(root: Path, counts: dict[str, int], size=(10, 12), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c, n in counts.items():
        for i in range(n):
            _img(root / c / f"{i:02d}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def test_default_models_by_image_size():
    assert fo.default_model(1, 28) == "sgt-cnn"
    assert fo.default_model(1, 29) == "resnet18-cifar"
    assert fo.default_model(3, 28) == "resnet18-cifar"
    assert fo.default_model(3, 32) == "resnet18-cifar"
    assert fo.default_model(3, 33) == "resnet18"
    assert fo.default_model(1, 64) == "resnet18"


def test_classes_and_files_skip_hidden_ones_and_system_files(tmp_path):
    for d in ("b", "a", ".hidden", "a/sub", "a/.git"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "file.png").write_bytes(b"x")
    for f in ("a/2.png", "a/1.png", "a/.ds", "a/Thumbs.db", "a/desktop.ini", "a/sub/0.png", "a/.git/x.png", "b/z.png"):
        (tmp_path / f).write_bytes(b"x")
    assert fo._classes(tmp_path) == ["a", "b"]
    assert fo._files(tmp_path / "a") == [tmp_path / "a" / "1.png", tmp_path / "a" / "2.png", tmp_path / "a" / "sub" / "0.png"]
    paths, labels = fo.list_images(tmp_path, ["a", "missing", "b"])
    assert paths[-1] == tmp_path / "b" / "z.png" and labels.tolist() == [0, 0, 0, 2] and labels.dtype == np.int64


def test_decode_cuts_the_centre_square_before_it_resizes(tmp_path):
    a = np.zeros((2, 6, 3), np.uint8)
    a[:, :, 0] = np.arange(6) * 40  # columns 0..5
    wide = _img(tmp_path / "w.png", a)
    out = fo.decode(wide, 2, 3)
    assert out.shape == (3, 2, 2) and out[0].tolist() == [[80, 120], [80, 120]]  # columns 2 and 3
    tall = _img(tmp_path / "t.png", a.transpose(1, 0, 2).copy())  # 6 rows x 2 columns
    assert fo.decode(tall, 2, 3)[0].tolist() == [[80, 80], [120, 120]]
    grey = fo.decode(wide, 2, 1)
    assert grey.shape == (1, 2, 2) and grey.dtype == np.uint8
    want = np.asarray(Image.fromarray(a).convert("L").crop((2, 0, 4, 2)))
    assert np.array_equal(grey[0], want)
    big = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    p = _img(tmp_path / "b.png", big)
    want = np.asarray(Image.fromarray(big).crop((4, 0, 16, 12)).resize((5, 5), Image.BILINEAR)).transpose(2, 0, 1)
    assert np.array_equal(fo.decode(p, 5, 3), want)
    g = _img(tmp_path / "g.png", big[:, :, 0])  # grey file, three channels asked: replicated
    out = fo.decode(g, 12, 3)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], big[:, 4:16, 0])


def test_decode_refuses_images_over_the_pixel_limit_from_the_header(tmp_path, monkeypatch):
    p = _img(tmp_path / "p.png", np.zeros((3, 4, 3), np.uint8))
    monkeypatch.setattr(fo, "MAX_PIXELS", 12)
    assert fo.decode(p, 3, 3).shape == (3, 3, 3)
    monkeypatch.setattr(fo, "MAX_PIXELS", 11)
    with pytest.raises(ValueError, match=r"^an image of 4 x 3 pixels \(the limit is 11 pixels\)$"):
        fo.decode(p, 3, 3)
    img, err = fo._try_decode((p, 3, 3))
    assert img is None and err == "ValueError: an image of 4 x 3 pixels (the limit is 11 pixels)"
    (tmp_path / "bad.png").write_bytes(b"not an image")
    img, err = fo._try_decode((tmp_path / "bad.png", 3, 3))
    assert img is None and err.startswith("UnidentifiedImageError: ")
    monkeypatch.setattr(fo, "MAX_PIXELS", 12)
    img, err = fo._try_decode((p, 3, 1))
    assert err is None and img.shape == (1, 3, 3)


def test_decode_reads_jpegs_at_a_reduced_scale(tmp_path):
    rng = np.random.default_rng(2)
    a = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 64 x 64
    p = _img(tmp_path / "j.jpg", a, "JPEG")
    with Image.open(p) as im:
        im.draft("RGB", (8, 8))
        want = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        assert im.size == (8, 8)
    assert np.array_equal(fo.decode(p, 8, 3), want)


def test_bad_files_stop_the_decoding_or_are_skipped_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(fo, "CHUNK", 2)
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        if i in (1, 3):
            p.write_bytes(b"broken")
        else:
            _img(p, np.full((4, 4, 3), 10 * i, np.uint8))
        paths.append(p)
    labels = np.arange(5)
    bad: list[int] = []
    got = list(fo._decoded_chunks(paths, labels, 4, 3, True, bad, "w"))
    assert bad == [1, 3]
    assert [c[1].tolist() for c in got] == [[0], [2], [4]]
    assert [int(c[0][0, 0, 0, 0]) for c in got] == [0, 20, 40]
    with pytest.raises(DataError, match=r"^w: .*1.png is not a readable image \(UnidentifiedImageError: .*\); remove it, or add ',skip-bad'"):
        list(fo._decoded_chunks(paths, labels, 4, 3, False, [], "w"))
    bad = []
    assert list(fo._decoded_chunks(paths[1:2], labels[1:2], 4, 3, True, bad, "w")) == [] and bad == [0]


def test_split_folders_by_their_names(tmp_path):
    (tmp_path / "train").mkdir()
    assert fo._split_dirs(tmp_path) is None
    (tmp_path / "validation").mkdir()
    assert fo._split_dirs(tmp_path) == {"train": tmp_path / "train", "test": tmp_path / "validation"}
    (tmp_path / "test").mkdir()
    (tmp_path / "val").mkdir()
    assert fo._split_dirs(tmp_path)["test"] == tmp_path / "val"
    (tmp_path / "val").rmdir()
    assert fo._split_dirs(tmp_path)["test"] == tmp_path / "test"
    (tmp_path / "train").rmdir()
    assert fo._split_dirs(tmp_path) is None


def test_an_image_folder_with_a_made_split(tmp_path, capsys):
    root = _tree(tmp_path / "imgs", {"cat": 5, "dog": 5})
    (root / "dog" / "zz.png").write_bytes(b"broken")  # the last file: a test image or a train one
    f = fo.ImageFolder(f"folder:{root},size=8,test=0.4,skip-bad")
    assert (f.size, f.channels, f.test, f.skip_bad) == (8, 3, 0.4, True)
    assert f.classes == ["cat", "dog"] and f.origin == "a seeded stratified split, test fraction 0.4"
    tr, te = f.load("train"), f.load("test")
    assert len(tr) + len(te) == 10 and len(te) == 4 and torch.bincount(te.y).tolist() == [2, 2]
    assert "skipped 1 unreadable file(s) (first: " in capsys.readouterr().err
    meta = f.caches["train"].meta
    assert meta["n_train"] == len(tr) and meta["skipped"] == [str(root / "dog" / "zz.png")]
    assert meta["classes"] == ["cat", "dog"] and meta["size"] == 8 and meta["channels"] == 3
    info = f.info()
    assert info.shape == (3, 8, 8) and info.num_classes == 2 and info.classes == ("cat", "dog")
    assert info.default_model == "resnet18-cifar"
    assert info.description == f"image folder {root}: 2 classes, 8 px, a seeded stratified split, test fraction 0.4"
    px = tr.pixels.numpy().astype(np.float64) / 255
    want = px.transpose(1, 0, 2, 3).reshape(3, -1).mean(1)
    assert np.allclose(info.mean, want, atol=1e-4)  # the training images only
    assert info.loader("test").y.tolist() == te.y.tolist()
    assert fo.resolve(f"folder:{root},size=8,test=0.4,skip-bad").mean == info.mean
    again = fo.ImageFolder(f"folder:{root},size=8,test=0.4,skip-bad")  # from the cache, no second message
    assert capsys.readouterr().err == "" and again.load("train").y.tolist() == tr.y.tolist()


def test_defaults_and_bounds_of_the_options(tmp_path):
    root = _tree(tmp_path / "i", {"a": 5, "b": 5}, size=(8, 8))
    f = fo.ImageFolder(f"folder:{root},size=8")
    assert (f.channels, f.test, f.skip_bad) == (3, 0.2, False) and len(f.load("test")) == 2
    assert fo.DEFAULT_SIZE == 224 and fo.TEST_FRACTION == 0.2
    assert fo.ImageFolder(f"folder:{root},size=1024").size == 1024
    for opts, msg in (("size=7", "size must be in 8..1024, got 7"), ("size=1025", "size must be in 8..1024, got 1025"),
                      ("channels=2", "channels must be 1 or 3, got 2"), ("test=0", r"test must be a fraction in \(0, 1\), got 0.0"),
                      ("test=1", "got 1.0")):
        with pytest.raises(DataError, match=msg):
            fo.ImageFolder(f"folder:{root},{opts}")
    assert fo.ImageFolder(f"folder:{root},size=8,channels=1").load().pixels.shape[1:] == (1, 8, 8)
    with pytest.raises(DataError, match="i/a/00.png is not a folder; give a folder of class folders"):
        fo.ImageFolder(f"folder:{root / 'a' / '00.png'},size=8")


def test_an_image_folder_with_its_own_split(tmp_path):
    _tree(tmp_path / "s" / "train", {"a": 2, "b": 3})
    _tree(tmp_path / "s" / "test", {"a": 1, "b": 1}, seed=1)
    f = fo.ImageFolder(f"folder:{tmp_path / 's'},size=8")
    assert f.origin == "the folder's own split" and f.classes == ["a", "b"]
    assert f.load("train").y.tolist() == [0, 0, 1, 1, 1] and f.load("test").y.tolist() == [0, 1]
    assert f.caches["train"] is not f.caches["test"]
    _tree(tmp_path / "t" / "train", {"a": 2, "b": 3})
    _tree(tmp_path / "t" / "val", {"a": 1, "c": 1, "d": 1})
    with pytest.raises(DataError, match=r"t/val has classes that .*t/train lacks: c, d$"):
        fo.ImageFolder(f"folder:{tmp_path / 't'},size=8")
    _tree(tmp_path / "u" / "train", {"a": 2, "b": 3})
    (tmp_path / "u" / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files under .*u/val/<class>/"):
        fo.ImageFolder(f"folder:{tmp_path / 'u'},size=8")


def test_too_few_or_too_many_classes_and_empty_splits_are_refused(tmp_path, monkeypatch):
    one = _tree(tmp_path / "one", {"a": 4})
    with pytest.raises(DataError, match=r"found 1 class folder\(s\) in .*one; the layout is PATH/<class>/<image>"):
        fo.ImageFolder(f"folder:{one},size=8")
    three = _tree(tmp_path / "three", {"a": 2, "b": 2, "c": 2})
    monkeypatch.setattr(fo, "MAX_CLASSES", 2)
    with pytest.raises(DataError, match="3 class folders in .*three, more than the 2 a model can have"):
        fo.ImageFolder(f"folder:{three},size=8")
    monkeypatch.setattr(fo, "MAX_CLASSES", 3)
    assert len(fo.ImageFolder(f"folder:{three},size=8").classes) == 3
    single = _tree(tmp_path / "single", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="the test split is empty .each class needs two images or more"):
        fo.ImageFolder(f"folder:{single},size=8")
    _tree(tmp_path / "own" / "train", {"a": 1, "b": 1})
    (tmp_path / "own" / "val" / "a").mkdir(parents=True)
    (tmp_path / "own" / "val" / "a" / "x.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="the test split is empty"):
        fo.ImageFolder(f"folder:{tmp_path / 'own'},size=8,skip-bad")


@pytest.mark.parametrize("n_train", [None, True, "3", -1, 11])
def test_a_cache_without_a_valid_n_train_is_damaged(tmp_path, n_train):
    root = _tree(tmp_path / "imgs", {"a": 5, "b": 5}, size=(8, 8))
    f = fo.ImageFolder(f"folder:{root},size=8")
    assert len(f.load("train")) == 8
    meta_path = next((tmp_path / ".sgtlab-cache").glob("imgs-*/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["n_train"] = n_train
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="the image cache of .* is damaged .its meta.json has no valid n_train."):
        fo.ImageFolder(f"folder:{root},size=8")
    meta["n_train"] = 10  # every image in train: the test split is empty, refused as such
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="the test split is empty"):
        fo.ImageFolder(f"folder:{root},size=8")
    meta["n_train"] = 0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="the train split is empty"):
        fo.ImageFolder(f"folder:{root},size=8")


def _header(shape: tuple, descr: str) -> bytes:
    buf = _io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_a_lying_member_without_the_npy_name_is_checked_too(tmp_path):
    # np.load reads any member with the .npy magic as an array: `x` as well as `x.npy`
    raw = _header((1000000000000,), "<f4") + np.zeros(2, np.float32).tobytes()
    with zipfile.ZipFile(tmp_path / "n.npz", "w") as z:
        z.writestr("x", raw)
        z.writestr("y.npy", _npy(np.zeros(2, np.int64)))
    with pytest.raises(DataError, match=r"array 'x' declares shape \(1000000000000,\) \(4000000000000 bytes\) but holds 8 bytes"):
        read_npz(tmp_path / "n.npz", "n", 0.2)


def test_members_are_checked_past_other_files_and_object_arrays(tmp_path):
    lying = _npy(np.zeros((2, 3), np.float32)).replace(b"(2, 3)", b"(9, 3)")
    with zipfile.ZipFile(tmp_path / "o.npz", "w") as z:
        z.writestr("notes.txt", b"not an array")
        z.writestr("a.npy", _npy(np.array([None], dtype=object)))
        z.writestr("x.npy", lying)
        z.writestr("y.npy", _npy(np.zeros(2, np.int64)))
    with pytest.raises(DataError, match=r"array 'x' declares shape \(9, 3\)"):
        read_npz(tmp_path / "o.npz", "n", 0.2)


def test_a_header_whose_size_overflows_64_bits_is_refused(tmp_path):
    raw = _header((4294967296, 4294967296), "|u1")  # no data: a 64-bit product would wrap to 0 bytes
    with zipfile.ZipFile(tmp_path / "h.npz", "w") as z:
        z.writestr("x.npy", raw)
        z.writestr("y.npy", _npy(np.zeros(0, np.int64)))
    with pytest.raises(DataError, match=r"declares shape \(4294967296, 4294967296\) \(18446744073709551616 bytes\) "
                                        r"but holds 0 bytes"):
        read_npz(tmp_path / "h.npz", "n", 0.2)


def test_errors_in_the_arrays_name_the_data_set(tmp_path):
    y = np.zeros(4, np.int64)
    with pytest.raises(DataError, match="^mine: images must have 3 or 4 dimensions"):
        from_arrays(np.zeros((4, 2)), y, "mine")
    with pytest.raises(DataError, match=r"^mine: 4 images but labels of shape \(3,\)"):
        from_arrays(np.zeros((4, 2, 2)), y[:3], "mine")
    with pytest.raises(DataError, match="^arrays: images must have"):
        from_arrays(np.zeros((4, 2)), y)
    with pytest.raises(DataError, match="^n: labels must be integers, got float64"):
        read_npz(_npz(tmp_path / "f.npz", x=np.zeros((4, 2, 2)), y=np.zeros(4)), "n", 0.2)
    with pytest.raises(DataError, match=r"^n: .*o.npz holds an object array \(pickled Python objects\), which sgtlab "
                                        r"never loads; store numeric arrays$"):
        read_npz(_npz(tmp_path / "o.npz", x=np.array([None, 1], dtype=object), y=y[:2]), "n", 0.2)


def test_tensors_that_require_grad_are_taken():
    x = torch.rand(10, 1, 2, 2, requires_grad=True)
    d = from_arrays(x, torch.arange(10) % 2, x_test=x[:2], y_test=torch.tensor([0, 1]))
    assert torch.equal(d["train"].pixels, x.detach()) and not d["train"].pixels.requires_grad


def test_the_std_of_two_pixels_is_the_sample_std():
    px = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1)
    assert arrays._mean_std(px) == ((0.5,), (round(0.5 ** 0.5, 4),))


def test_resolve_takes_the_test_fraction_and_names_the_data(tmp_path):
    x = np.random.default_rng(0).random((12, 1, 4, 4)).astype(np.float32)
    name = f"npz:{_npz(tmp_path / 'a.npz', x=x, y=np.array([0, 1, 2] * 4))},test=0.5"
    info = arrays.resolve(name)
    assert info.name == name and len(info.loader("test")) == 6 and len(info.loader()) == 6  # default: train
    train = info.loader("train")
    assert (info.mean, info.std) == arrays._mean_std(train.pixels)


def test_the_pcam_cache_is_reused_rebuilt_when_the_file_changes_and_says_what_it_holds(tmp_path, monkeypatch):
    x, y = _pcam_split(tmp_path, "train", 3)
    d = pcam.load_pcam(data_dir=tmp_path)  # the training split by default
    assert np.array_equal(d.pixels.numpy(), x.transpose(0, 3, 1, 2))
    xp = tmp_path / pcam.files("train")[0]
    folder = cache.cache_dir(xp, "pcam")  # where earlier versions put it: found again, not rebuilt
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source"] == str(xp) and meta["classes"] == ["normal", "tumour"]
    monkeypatch.setattr(pcam, "_chunks", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert np.array_equal(pcam.load_pcam("train", tmp_path).pixels.numpy(), x.transpose(0, 3, 1, 2))
    monkeypatch.undo()
    x2, _ = _pcam_split(tmp_path, "train", 3, seed=7)  # the file changes: the cache follows
    assert np.array_equal(pcam.load_pcam("train", tmp_path).pixels.numpy(), x2.transpose(0, 3, 1, 2))


def test_pcam_messages_list_what_a_file_holds_and_where_files_were_looked_for(tmp_path):
    with h5py.File(tmp_path / "k.h5", "w") as f:
        for k in "gfedcba":
            f.create_dataset(k, data=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match=r"has no dataset 'x' \(it holds a, b, c, d, e\); is it a PCAM file"):
        pcam._open(tmp_path / "k.h5", "x")
    with h5py.File(tmp_path / "e.h5", "w"):
        pass
    with pytest.raises(DataError, match=r"has no dataset 'x' \(it holds nothing\)"):
        pcam._open(tmp_path / "e.h5", "x")
    with pytest.raises(DataError, match=rf"^pcam: missing \S+_train_x.h5 and \S+_train_y.h5 in {tmp_path / 'pcam'} or "
                                        rf"{tmp_path}; download camelyonpatch"):
        pcam.locate("train", tmp_path)


def test_a_single_declared_but_unwritten_value_is_refused(tmp_path):
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f.create_dataset("x", shape=(1,), dtype=np.uint8)
    with pytest.raises(DataError, match=r"'x' declares \(1,\) \(1 bytes\) but the file holds 0"):
        pcam._open(tmp_path / "one.h5", "x")


def test_names_that_are_not_utf8_have_fingerprints_and_cache_folders(tmp_path):
    odd = tmp_path / os.fsdecode(b"caf\xe9")  # a Latin-1 name: a surrogate in Python
    odd.mkdir()
    (odd / "a.png").write_bytes(b"1")
    fp = cache.fingerprint([odd / "a.png"], "classes=" + odd.name)
    assert fp != cache.fingerprint([odd / "a.png"], "classes=x")
    assert cache.fingerprint([odd / "gone.png"]) != cache.fingerprint([tmp_path / "gone.png"])
    d = cache.cache_dir(odd, "k=" + odd.name)
    assert d.name.startswith(odd.name + "-") and d != cache.cache_dir(odd, "k")
    assert cache.fingerprint([odd / "a.png"]) == cache.fingerprint([odd / "a.png"], "")  # no extra: ""


def test_an_unwritable_place_beside_the_data_sends_the_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SGTLAB_CACHE", raising=False)
    real = cache.tempfile.NamedTemporaryFile
    made = []

    def only_elsewhere(*a, dir=None, **kw):  # a folder where no file can be made (read-only, full)
        made.append(dir)
        if dir is not None and Path(dir).parent == tmp_path / "ro":
            raise PermissionError(13, "Permission denied")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(cache.tempfile, "NamedTemporaryFile", only_elsewhere)
    (tmp_path / "ro").mkdir()
    assert cache.cache_root(tmp_path / "ro") == Path.home() / ".cache" / "sgtlab" / "cache"
    assert cache.cache_root(tmp_path) == tmp_path / ".sgtlab-cache"
    assert made == [tmp_path / "ro" / ".sgtlab-cache", tmp_path / ".sgtlab-cache"]


def test_an_empty_cache_of_one_or_three_channels_has_their_statistics(tmp_path):
    for c in (1, 3):
        e = cache.build_cache(tmp_path / f"e{c}", "f", (c, 2, 2), iter(()), {})
        assert e.mean_std() == ((0.5,) * c, (0.25,) * c)


def test_meta_json_is_read_up_to_64_mb(tmp_path):
    folder = _built(tmp_path)
    text = (folder / "meta.json").read_text()
    (folder / "meta.json").write_text(text + " " * ((1 << 26) - len(text)))
    assert cache._read_meta(folder) is not None and cache.open_cache(folder, "fp") is not None
    (folder / "meta.json").write_text(text + " " * ((1 << 26) - len(text) + 1))
    assert cache._read_meta(folder) is None


def test_meta_values_are_checked_where_they_are_read(tmp_path):
    folder = _built(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    for changes in ({"n": -1}, {"shape": [1, 2, 4097]}, {"shape": "123"}, {"shape": {"a": 1, "b": 2, "c": 3}}):
        (folder / "meta.json").write_text(json.dumps({**meta, **changes}))
        assert cache._read_meta(folder) is None, changes
    (folder / "meta.json").write_text(json.dumps({**meta, "shape": [1, 4096, 4096]}))
    assert cache._read_meta(folder)["shape"] == [1, 4096, 4096]


class _Planted:
    def __reduce__(self):
        return (os.mkdir, (str(_Planted.path),))


def test_cache_files_holding_pickles_are_never_unpickled(tmp_path):
    _Planted.path = tmp_path / "pickle-ran"
    for name in ("y.npy", "stats.npy"):
        folder = _built(tmp_path / name)
        np.save(folder / name, np.array([_Planted()] * 3, dtype=object), allow_pickle=True)
        assert cache.open_cache(folder, "fp") is None
        assert not _Planted.path.exists()


def test_the_images_are_mapped_read_only_and_labels_stored_as_int64(tmp_path):
    folder = tmp_path / "a" / "b" / "c"  # parents made
    c = cache.build_cache(folder, "fp", (1, 1, 2), iter([(np.zeros((2, 1, 1, 2), np.uint8), np.array([1, 0], np.int32))]), {})
    maps = [line.split() for line in Path("/proc/self/maps").read_text().splitlines() if str(folder / "x.u8") in line]
    assert maps and all(m[1].startswith("r-") for m in maps)  # mapped read-only (not copy-on-write)
    assert c.x.tolist() == [[[[0, 0]]], [[[0, 0]]]]
    assert np.load(folder / "y.npy").dtype == np.int64 and c.y.tolist() == [1, 0]


def test_the_build_happens_in_a_temporary_beside_the_cache(tmp_path):
    folder = tmp_path / "c"
    seen = []

    def chunks():
        seen.extend(p.name for p in tmp_path.iterdir())
        yield np.zeros((1, 1, 1, 1), np.uint8), [0]

    cache.build_cache(folder, "fp", (1, 1, 1), chunks(), {})
    assert [n for n in seen if n.startswith(".c.tmp-")] and "c" not in seen


def test_leftovers_that_cannot_be_removed_do_not_stop_a_build(tmp_path, monkeypatch):
    real = os.unlink

    def stuck(path, *a, **kw):  # a file the build may not remove (another user's, a busy mount)
        if os.path.basename(path) == "stuck":
            raise PermissionError(13, "Permission denied")
        return real(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", stuck)
    stale = tmp_path / ".c.tmp-killed"
    stale.mkdir()
    (stale / "stuck").write_text("x")
    c = cache.build_cache(tmp_path / "c", "fp1", (1, 1, 1), _chunks(_images(2, 1, 1, 1), np.zeros(2, np.int64), 2), {})
    assert len(c.y) == 2 and (stale / "stuck").exists()
    (tmp_path / "c" / "stuck").write_text("x")  # the old cache, moved aside, cannot be removed in full
    c = cache.build_cache(tmp_path / "c", "fp2", (1, 1, 1), _chunks(_images(3, 1, 1, 1), np.zeros(3, np.int64), 3), {})
    assert len(c.y) == 3 and cache.open_cache(tmp_path / "c", "fp2") is not None


def test_no_images_give_int64_labels(tmp_path):
    (tmp_path / "a").mkdir()
    paths, labels = fo.list_images(tmp_path, ["a"])
    assert paths == [] and labels.dtype == np.int64


def test_decoding_leaves_other_warnings_alone(tmp_path):
    import warnings

    p = _img(tmp_path / "p.png", np.zeros((3, 4, 3), np.uint8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fo.decode(p, 3, 3)
        warnings.warn("still shown", UserWarning)
    assert [str(w.message) for w in caught] == ["still shown"]


def test_one_pixel_wide_or_high_images_are_decoded(tmp_path):
    line = np.arange(15, dtype=np.uint8).reshape(1, 5, 3) * 10
    for a in (line, line.transpose(1, 0, 2).copy()):
        out = fo.decode(_img(tmp_path / f"{a.shape[0]}.png", a), 1, 3)
        assert out.shape == (3, 1, 1) and out[:, 0, 0].tolist() == a.reshape(5, 3)[2].tolist()  # the centre pixel


def test_an_odd_margin_is_cut_by_rounding_down(tmp_path):
    a = np.zeros((5, 2, 3), np.uint8)
    a[:, :, 0] = (np.arange(5) * 40)[:, None]  # rows 0..4
    assert fo.decode(_img(tmp_path / "t.png", a), 2, 3)[0].tolist() == [[40, 40], [80, 80]]  # rows 1 and 2


def test_grey_jpegs_are_decoded_to_grey_by_the_jpeg_decoder(tmp_path):
    # libjpeg's grey output (its Y channel) differs from Pillow's grey conversion of the RGB it decodes
    a = np.random.default_rng(4).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    p = _img(tmp_path / "c.jpg", a, "JPEG")
    with Image.open(p) as im:
        im.draft("L", (32, 32))
        want = np.asarray(im.convert("L"))
    with Image.open(p) as im:
        assert not np.array_equal(np.asarray(im.convert("L")), want)
    assert np.array_equal(fo.decode(p, 32, 1)[0], want)


def test_the_caches_of_two_sizes_live_side_by_side_and_change_with_the_images(tmp_path, monkeypatch):
    root = _tree(tmp_path / "imgs", {"a": 5, "b": 5}, size=(8, 8))
    f8 = fo.ImageFolder(f"folder:{root},size=8")
    fo.ImageFolder(f"folder:{root},size=16")
    key = f"size=8,channels=3,skip_bad=False,classes=2,decode={fo.DECODE}"
    folder = cache.cache_dir(root, key + ",split")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source"] == str(root) and meta["n_train"] == 8
    monkeypatch.setattr(fo, "decode", lambda *a: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = fo.ImageFolder(f"folder:{root},size=8")
    assert torch.equal(again.load().pixels, f8.load().pixels)
    monkeypatch.undo()
    p = sorted((root / "a").iterdir())[0]
    _img(p, np.full((8, 8, 3), 77, np.uint8))  # the same files, one changed: decoded again
    changed = fo.ImageFolder(f"folder:{root},size=8")
    both = torch.cat([changed.load("train").pixels, changed.load("test").pixels])
    assert (both.reshape(10, -1) == 77).all(1).sum() == 1
    own = _tree(tmp_path / "own" / "train", {"a": 2, "b": 2}, size=(8, 8))
    _tree(tmp_path / "own" / "val", {"a": 1, "b": 1}, size=(8, 8))
    fo.ImageFolder(f"folder:{tmp_path / 'own'},size=8")
    assert (cache.cache_dir(own, key) / "meta.json").exists()
    assert (cache.cache_dir(tmp_path / "own" / "val", key) / "meta.json").exists()


def test_errors_and_data_carry_the_data_set_name(tmp_path):
    root = _tree(tmp_path / "imgs", {"a": 5, "b": 5}, size=(8, 8))
    name = f"folder:{root},size=8"
    f = fo.ImageFolder(name)
    assert f.name == name and f.load().name == name and f.load("test").name == name
    assert torch.equal(f.load().pixels, f.load("train").pixels)
    info = f.info()
    assert info.name == name
    idx = np.arange(len(f.caches["train"].y))[f.slices["train"]]
    assert (info.mean, info.std) == f.caches["train"].mean_std(idx)
    (root / "b" / "zz.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=rf"^{name}: .*zz.png is not a readable image"):
        fo.ImageFolder(name)
    _tree(tmp_path / "own" / "train", {"a": 2, "b": 2}, size=(8, 8))
    _tree(tmp_path / "own" / "val", {"a": 1, "b": 1}, size=(8, 8))
    (tmp_path / "own" / "val" / "b" / "zz.png").write_bytes(b"broken")
    own = f"folder:{tmp_path / 'own'},size=8"
    with pytest.raises(DataError, match=rf"^{own}: .*zz.png is not a readable image"):
        fo.ImageFolder(own)
    for bad in ("1", "1.5"):
        with pytest.raises(DataError, match=rf"^{name},test={bad}: test must be a fraction in \(0, 1\), got {float(bad)}$"):
            fo.ImageFolder(f"{name},test={bad}")
    with pytest.raises(DataError, match=r"test must be a fraction in \(0, 1\), got 1.5$"):
        fo.ImageFolder(f"{own},test=1.5")


def test_a_skipped_first_test_image_leaves_the_training_split_whole(tmp_path, capsys):
    root = _tree(tmp_path / "imgs", {"a": 5, "b": 5}, size=(8, 8))
    classes = fo._classes(root)
    paths, labels = fo.list_images(root, classes)
    split = fo.stratified_split(labels, 0.2)
    first_test = paths[split["test"][0]]
    first_test.write_bytes(b"broken")
    f = fo.ImageFolder(f"folder:{root},size=8,skip-bad")
    assert len(f.load("train")) == 8 and len(f.load("test")) == 1
    key = f"size=8,channels=3,skip_bad=True,classes=2,decode={fo.DECODE}"
    err = capsys.readouterr().err
    assert err == (f"sgtlab: folder:{root},size=8,skip-bad: skipped 1 unreadable file(s) (first: {first_test}); the list "
                   f"is in {cache.cache_dir(root, key + ',split') / 'meta.json'}\n")


def test_an_array_numpy_cannot_read_is_not_called_a_pickle(tmp_path):
    raw = _header((-2, -4), "<f4") + np.zeros(8, np.float32).tobytes()  # sizes agree, the shape is impossible
    with zipfile.ZipFile(tmp_path / "neg.npz", "w") as z:
        z.writestr("x.npy", raw)
        z.writestr("y.npy", _npy(np.zeros(2, np.int64)))
    with pytest.raises(DataError, match=r"neg.npz holds an array numpy cannot read \("):
        read_npz(tmp_path / "neg.npz", "n", 0.2)
