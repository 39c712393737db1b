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
