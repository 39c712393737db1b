"""Data: MNIST-5k, MNIST/Fashion-MNIST IDX files, CIFAR-10 batches (safe unpickling), Decoy-MNIST,
batch augmentation and the tensor loader."""
from __future__ import annotations

import builtins
import gzip
import io
import os
import pickle
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import mnist_dir, needs_mnist
from sgtlab.data import TensorData, TensorLoader, dataset_info, load_dataset
from sgtlab.data import cifar, mnist
from sgtlab.data.augment import crop_flip
from sgtlab.data.decoy import PATCH, add_decoy, corner_masks, patch_value
from sgtlab.data.mnist5k import split_indices
from sgtlab.errors import DataError, SgtlabError


# ---------------------------------------------------------------- MNIST-5k

def test_mnist5k_shapes_range_stratified_fixed():
    tr, te = load_dataset("mnist5k", "train"), load_dataset("mnist5k", "test")
    assert tr.x.shape == (4000, 1, 28, 28) and te.x.shape == (1000, 1, 28, 28)
    for d in (tr, te):
        assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
        assert d.x.min() >= 0 and d.x.max() <= 1 and d.x.max() > 0.99
    assert torch.bincount(tr.y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(te.y, minlength=10).tolist() == [100] * 10
    assert torch.bincount(te.y[:100], minlength=10).min() >= 3  # classes interleaved, not sorted
    again = load_dataset("mnist5k", "test")
    assert torch.equal(again.x, te.x) and torch.equal(again.y, te.y)
    idx = split_indices(np.repeat(np.arange(10), 500))
    assert len(np.intersect1d(idx["train"], idx["test"])) == 0
    assert sorted(np.concatenate([idx["train"], idx["test"]]).tolist()) == list(range(5000))


# ---------------------------------------------------------------- original MNIST / Fashion-MNIST

@needs_mnist
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_original_idx_files(name):
    for split, n in (("train", 60000), ("test", 10000)):
        d = load_dataset(name, split, mnist_dir(), download=False)
        assert d.x.shape == (n, 1, 28, 28) and d.x.dtype == torch.float32
        assert d.x.min() == 0 and d.x.max() == 1
        assert d.y.min() == 0 and d.y.max() == 9
        assert torch.bincount(d.y, minlength=10).min() > n // 20


def write_idx(path: Path, arr: np.ndarray) -> Path:
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())
    return path


def fake_mnist_test(root: Path, n: int = 5) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    img = write_idx(root / "mnist" / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
    lbl = write_idx(root / "mnist" / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return img, lbl


def test_idx_small_files_load_and_md5_mismatch_refused(tmp_path):
    img, _ = fake_mnist_test(tmp_path)
    d = mnist.load_idx_dataset("mnist", "test", tmp_path, download=False, verify=False)
    assert d.x.shape == (5, 1, 28, 28)
    assert torch.equal(d.x[:, 0].mul(255).round().byte(), torch.from_numpy(mnist.read_idx(img).copy()))
    before = img.read_bytes()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz is corrupt: md5 .*download it again"):
        load_dataset("mnist", "test", tmp_path, download=False)
    assert img.read_bytes() == before  # nothing deleted or overwritten


@pytest.mark.parametrize("download", [True, False])
def test_missing_idx_files_offline_names_them(tmp_path, monkeypatch, download):
    calls = []

    def offline(urls, dest, md5, timeout=30.0):
        calls.append(dest)
        raise DataError(f"could not download {dest.name}: network unreachable")

    monkeypatch.setattr(mnist, "download_file", offline)
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", "test", tmp_path, download=download)
    msg = str(e.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert "--data-dir" in msg and "\n" not in msg
    assert bool(calls) == download
    assert not any(tmp_path.rglob("*.gz"))


def test_corrupt_and_truncated_gzip_refused(tmp_path):
    img, _ = fake_mnist_test(tmp_path)
    good = img.read_bytes()
    img.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="not a readable gzip"):
        mnist.load_idx_dataset("mnist", "test", tmp_path, download=False, verify=False)
    img.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="not a readable gzip"):
        mnist.load_idx_dataset("mnist", "test", tmp_path, download=False, verify=False)


@pytest.mark.parametrize("header", [
    bytes([0, 0, 0x0D, 3]) + np.array([1, 28, 28], ">u4").tobytes(),  # float32 dtype code
    bytes([1, 2, 0x08, 3]) + np.array([1, 28, 28], ">u4").tobytes(),  # bad magic
    bytes([0, 0, 0x08, 3]) + np.array([2, 28, 28], ">u4").tobytes(),  # dims say 2 images, 1 stored
    bytes([0, 0]),  # too short
])
def test_idx_bad_header_refused(tmp_path, header):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(28 * 28))
    with pytest.raises(DataError):
        mnist.read_idx(path)



def test_idx_header_bytes_checked_one_by_one_and_empty_files_parse():
    body = np.array([1, 2, 2], ">u4").tobytes() + bytes(4)
    assert mnist.parse_idx(bytes([0, 0, 0x08, 3]) + body).shape == (1, 2, 2)
    for magic in ([1, 0], [0, 1]):  # either magic byte alone is enough to refuse
        with pytest.raises(DataError):
            mnist.parse_idx(bytes(magic + [0x08, 3]) + body)
    # a header of dims (0, 28, 28) and nothing after it: no images, not a truncated file
    assert mnist.parse_idx(bytes([0, 0, 0x08, 3]) + np.array([0, 28, 28], ">u4").tobytes()).shape == (0, 28, 28)
    assert mnist.parse_idx(bytes([0, 0, 0x08, 0, 7])).tolist() == 7  # 0-d: one value


def test_idx_size_limit_inclusive(monkeypatch):
    raw = bytes([0, 0, 0x08, 1]) + np.array([4], ">u4").tobytes() + bytes(4)
    monkeypatch.setattr(mnist, "MAX_IDX_BYTES", len(raw))
    assert mnist.parse_idx(raw).shape == (4,)
    monkeypatch.setattr(mnist, "MAX_IDX_BYTES", len(raw) - 1)
    with pytest.raises(DataError, match="more than"):
        mnist.parse_idx(raw)


def test_idx_files_in_the_data_dir_itself_labels_and_download(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    images, labels = rng.integers(0, 256, (4, 28, 28)), np.array([0, 9, 3, 9])
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)  # no mnist/ subfolder
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    d = mnist.load_idx_dataset("mnist", "test", tmp_path, download=False, verify=False)
    assert d.y.dtype == torch.int64 and d.y.tolist() == [0, 9, 3, 9] and d.name == "mnist"
    bad = tmp_path / "bad" / "t10k-labels-idx1-ubyte.gz"
    write_idx(bad, labels)
    bad.write_bytes(gzip.compress(b"\x01" + gzip.decompress(bad.read_bytes())[1:]))
    with pytest.raises(DataError, match="not an IDX file") as e:
        mnist.read_idx(bad)
    assert str(bad) in str(e.value)  # the error names the file
    good = tmp_path / "t10k-labels-idx1-ubyte.gz"  # a file of exactly MAX_IDX_BYTES decompressed is read
    monkeypatch.setattr(mnist, "MAX_IDX_BYTES", len(gzip.decompress(good.read_bytes())))
    assert mnist.read_idx(good).tolist() == [0, 9, 3, 9]
    monkeypatch.undo()
    for imgs, lbls in ((images[:3], labels), (images, labels[:, None])):  # counts differ; labels not 1-D
        with pytest.raises(DataError, match="do not match"):
            mnist.check_idx_pair("mnist", imgs, lbls)
    torch.testing.assert_close(d.x, torch.from_numpy(images).float()[:, None] / 255)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 10, 3, 9]))
    with pytest.raises(DataError, match="labels must be 0..9"):
        mnist.load_idx_dataset("mnist", "test", tmp_path, download=False, verify=False)
    fetched = []

    def online(urls, dest, md5, timeout=30.0):  # serves small files instead of the real ones
        fetched.append((urls[0], dest, md5))
        write_idx(dest, images if "images" in dest.name else labels)
        return dest

    monkeypatch.setattr(mnist, "download_file", online)
    d = mnist.load_idx_dataset("fashion-mnist", "test", tmp_path / "new", verify=False)  # downloads by default
    assert len(d) == 4 and [f[1].name for f in fetched] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert all(f[1].parent == tmp_path / "new" / "fashion-mnist" for f in fetched)
    assert fetched[0][0] == mnist.MIRRORS["fashion-mnist"][0] + "t10k-images-idx3-ubyte.gz"
    assert fetched[0][2] == mnist.MD5["fashion-mnist"]["t10k-images-idx3-ubyte.gz"]
    # defaults: the train split, md5-checked
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images[:3])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels[:3])
    assert len(mnist.load_idx_dataset("mnist", data_dir=tmp_path, download=False, verify=False)) == 3
    with pytest.raises(DataError, match="md5"):
        mnist.find_files("mnist", "train", tmp_path, download=False)


# ---------------------------------------------------------------- CIFAR-10

def _py2_style_pickle(obj) -> bytes:
    """Protocol 2 the way the official (Python 2, numpy 1.x) files are: str, not bytes, for the
    array's type code and pixel buffer, and numpy.core.multiarray._reconstruct."""

    class Py2Pickler(pickle.Pickler):
        def reducer_override(self, o):
            if isinstance(o, np.ndarray):
                fn, args, (ver, shape, dtype, fortran, raw) = o.__reduce__()
                return fn, (args[0], args[1], "b"), (ver, shape, dtype, fortran, raw.decode("latin1"))
            return NotImplemented

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    raw = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"_codecs" not in raw and b"numpy.core.multiarray\n_reconstruct" in raw
    return raw


def make_cifar(root: Path, form: str, n_train: int = 6, n_test: int = 7) -> dict[str, tuple[np.ndarray, list]]:
    """Small CIFAR-10 python files: form 'folder' or 'archive'. Returns split -> (data, labels)."""
    rng = np.random.default_rng(1)
    blobs, truth = {}, {"train": ([], [])}
    for name in cifar.FILES["train"] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_train
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {"batch_label": f"{name} of the test files", "labels": labels, "data": data,
                 "filenames": [f"img_{i}.png" for i in range(n)]}
        # training batches as the official files, the test batch as numpy 2 / protocol 4 writes it
        blobs[name] = pickle.dumps(batch, protocol=4) if name == "test_batch" else _py2_style_pickle(batch)
        if name == "test_batch":
            truth["test"] = (data, labels)
        else:
            truth["train"][0].append(data)
            truth["train"][1].extend(labels)
    truth["train"] = (np.concatenate(truth["train"][0]), truth["train"][1])
    if form == "folder":
        folder = root / cifar.FOLDER
        folder.mkdir(parents=True)
        for name, blob in blobs.items():
            (folder / name).write_bytes(blob)
    else:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / cifar.ARCHIVE, "w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"{cifar.FOLDER}/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return truth


@pytest.mark.parametrize("form", ["folder", "archive"])
@pytest.mark.parametrize("sub", ["", "cifar10"])
def test_cifar_small_files(tmp_path, form, sub):
    truth = make_cifar(tmp_path / sub if sub else tmp_path, form)
    for split in ("train", "test"):
        d = cifar.load_cifar10(split, tmp_path, download=False, verify=False)
        data, labels = truth[split]
        assert d.x.shape == (len(data), 3, 32, 32) and d.x.dtype == torch.float32
        assert d.y.tolist() == labels
        # pixel (c, h, w) is byte c*1024 + h*32 + w of the row: red plane, green, blue
        i, c, h, w = 1, 2, 5, 30
        assert d.x[i, c, h, w].item() == pytest.approx(data[i, c * 1024 + h * 32 + w] / 255)
        assert torch.equal(d.x.mul(255).round().byte().reshape(len(data), -1), torch.from_numpy(data))


def test_cifar_registered_and_md5_checked(tmp_path):
    info = dataset_info("cifar10")
    assert info.shape == (3, 32, 32) and info.num_classes == 10 and info.default_model == "resnet18-cifar"
    assert len(info.mean) == len(info.std) == 3
    make_cifar(tmp_path, "folder")
    with pytest.raises(DataError, match="test_batch is corrupt: md5"):
        load_dataset("cifar10", "test", tmp_path, download=False)
    make_cifar(tmp_path / "cifar10", "archive")
    (tmp_path / cifar.FOLDER / "test_batch").unlink()  # folder incomplete -> the archive is used
    with pytest.raises(DataError, match="cifar-10-python.tar.gz is corrupt: md5"):
        load_dataset("cifar10", "test", tmp_path, download=False)


def test_cifar_missing_offline_and_download(tmp_path, monkeypatch):
    def offline(urls, dest, md5, timeout=30.0):
        raise DataError(f"could not download {dest.name}: network unreachable")

    monkeypatch.setattr(cifar, "download_file", offline)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", "test", tmp_path)
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and "test_batch" in msg and "download failed" in msg
    assert "--data-dir" in msg and "\n" not in msg

    fetched = []

    def online(urls, dest, md5, timeout=30.0):  # serves a small archive instead of the real one
        fetched.append((urls, dest, md5))
        make_cifar(dest.parent, "archive")
        return dest

    monkeypatch.setattr(cifar, "download_file", online)
    d = cifar.load_cifar10("test", tmp_path, download=True, verify=False)
    assert len(d) == 7
    assert fetched[0][1] == tmp_path / "cifar10" / cifar.ARCHIVE and fetched[0][2] == cifar.MD5[cifar.ARCHIVE]


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("form", ["folder", "archive"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.call"])
def test_cifar_malicious_pickle_refused_not_run(tmp_path, form, payload):
    marker = tmp_path / "pwned"
    evil = {"os.system": _Evil(os.system, f"touch {marker}"),
            "builtins.eval": _Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
            "subprocess.call": _Evil(subprocess.call, ["touch", str(marker)])}[payload]
    blob = pickle.dumps({"data": evil, "labels": [0]}, protocol=2)
    root = tmp_path / "data"
    make_cifar(root, form)
    if form == "folder":
        (root / cifar.FOLDER / "test_batch").write_bytes(blob)
    else:
        with tarfile.open(root / cifar.ARCHIVE, "w:gz") as tar:
            info = tarfile.TarInfo(f"{cifar.FOLDER}/test_batch")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError, match=r"refused global .*nothing was executed") as e:
        cifar.load_cifar10("test", root, download=False, verify=False)
    assert "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("blob, match", [
    (pickle.dumps({"data": np.array([1, 2], dtype=object), "labels": [0, 1]}), "uint8 array"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 11]}), "labels must be 0..9"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "2 images but labels"),
    (pickle.dumps([1, 2, 3]), "expected a dict"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)})[:40], "not a readable CIFAR-10 batch"),
    (b"\x80\x04garbage", "not a readable CIFAR-10 batch"),
])
def test_cifar_malformed_batches_refused(tmp_path, blob, match):
    make_cifar(tmp_path, "folder")
    (tmp_path / cifar.FOLDER / "test_batch").write_bytes(blob)
    with pytest.raises(DataError, match=match):
        cifar.load_cifar10("test", tmp_path, download=False, verify=False)


def test_cifar_corrupt_archive_refused(tmp_path):
    make_cifar(tmp_path, "archive")
    path = tmp_path / cifar.ARCHIVE
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable tar.gz"):
        cifar.load_cifar10("train", tmp_path, download=False, verify=False)



def test_cifar_archive_without_a_batch_names_it(tmp_path):
    """An archive that lacks a training batch (here a directory stands in its name) is refused with
    a message naming that member; the test split, which it has, still loads."""
    make_cifar(tmp_path / "f", "folder")
    with tarfile.open(tmp_path / cifar.ARCHIVE, "w:gz") as tar:
        for p in sorted((tmp_path / "f" / cifar.FOLDER).iterdir()):
            if p.name != "data_batch_3":
                tar.add(p, arcname=f"{cifar.FOLDER}/{p.name}")
        info = tarfile.TarInfo(f"{cifar.FOLDER}/data_batch_3")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    with pytest.raises(DataError, match=f"lacks {cifar.FOLDER}/data_batch_3; delete it") as e:
        cifar.load_cifar10("train", tmp_path, download=False, verify=False)
    assert "data_batch_1" not in str(e.value)
    assert len(cifar.load_cifar10("test", tmp_path, download=False, verify=False)) == 7


def test_cifar_size_limits_are_inclusive_and_errors_name_the_file(tmp_path, monkeypatch):
    """A batch of exactly `max_batch` bytes and an archive of exactly MAX_ARCHIVE_BYTES are read; one
    byte more is refused. A malformed batch's error names its file."""
    import dataclasses

    make_cifar(tmp_path / "f", "folder")
    size = (tmp_path / "f" / cifar.FOLDER / "test_batch").stat().st_size
    exact = dataclasses.replace(cifar.CIFAR10, max_batch=size)
    assert len(cifar.load_cifar(exact, "test", tmp_path / "f", download=False, verify=False)) == 7
    with pytest.raises(DataError, match="larger than"):
        cifar.load_cifar(dataclasses.replace(exact, max_batch=size - 1), "test", tmp_path / "f", download=False,
                         verify=False)
    make_cifar(tmp_path / "a", "archive")  # the same batches, so a member of exactly max_batch bytes
    assert len(cifar.load_cifar(exact, "test", tmp_path / "a", download=False, verify=False)) == 7
    monkeypatch.setattr(cifar, "MAX_ARCHIVE_BYTES", (tmp_path / "a" / cifar.ARCHIVE).stat().st_size)
    assert len(cifar.load_cifar10("test", tmp_path / "a", download=False, verify=False)) == 7
    monkeypatch.setattr(cifar, "MAX_ARCHIVE_BYTES", cifar.MAX_ARCHIVE_BYTES - 1)
    with pytest.raises(DataError, match="larger than"):
        cifar.load_cifar10("test", tmp_path / "a", download=False, verify=False)
    (tmp_path / "f" / cifar.FOLDER / "test_batch").write_bytes(pickle.dumps([1]))
    with pytest.raises(DataError, match="expected a dict") as e:
        cifar.load_cifar10("test", tmp_path / "f", download=False, verify=False)
    assert str(tmp_path / "f" / cifar.FOLDER / "test_batch") in str(e.value)
    (tmp_path / "f" / cifar.FOLDER / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="not a readable") as e:
        cifar.load_cifar10("test", tmp_path / "f", download=False, verify=False)
    assert str(tmp_path / "f" / cifar.FOLDER / "test_batch") in str(e.value)


def test_cifar_defaults_train_split_and_download(tmp_path, monkeypatch):
    fetched = []

    def online(urls, dest, md5, timeout=30.0):  # serves small files instead of the real archive
        fetched.append((urls, dest, md5))
        from test_data_formats import make_cifar100
        make_cifar100(dest.parent, "archive") if "100" in dest.name else make_cifar(dest.parent, "archive")
        return dest

    monkeypatch.setattr(cifar, "download_file", online)
    d = cifar.load_cifar100(data_dir=tmp_path, verify=False)  # downloads by default, reads the train split
    assert [f[1] for f in fetched] == [tmp_path / "cifar100" / "cifar-100-python.tar.gz"] and len(d) == 12
    assert fetched[0][0] == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"]
    assert fetched[0][2] == "eb9058c3a382ffc7106e4002c42a8d85"
    d = cifar.load_cifar10(data_dir=tmp_path / "ten", verify=False)
    assert fetched[1][0] == cifar.URLS and fetched[1][1] == tmp_path / "ten" / "cifar10" / cifar.ARCHIVE
    assert len(d) == 5 * 6 and d.name == "cifar10"  # five training batches of 6
    assert len(cifar.load_cifar(cifar.CIFAR10, data_dir=tmp_path / "ten", download=False, verify=False)) == 30
    with pytest.raises(DataError, match="md5"):  # load_cifar checks the md5 by default
        cifar.load_cifar(cifar.CIFAR10, data_dir=tmp_path / "ten", download=False)
    assert len(cifar.load_cifar(cifar.CIFAR100, data_dir=tmp_path / "dl", verify=False)) == 12  # downloads
    assert fetched[-1][1] == tmp_path / "dl" / "cifar100" / "cifar-100-python.tar.gz"


# ---------------------------------------------------------------- Decoy-MNIST

def _check_decoy(base: TensorData, d: TensorData, split: str):
    n, _, h, w = base.x.shape
    patch, digit, code = d.extras["patch_mask"], d.extras["digit_mask"], d.extras["patch_class"]
    assert d.x.shape == base.x.shape and torch.equal(d.y, base.y)
    assert patch.shape == digit.shape == (n, h, w) and patch.dtype == digit.dtype == torch.bool
    # the patch is one whole 4x4 corner square
    corners = corner_masks(h, w)
    match = (patch[:, None] == corners[None]).flatten(2).all(2)  # N x 4
    assert match.sum(1).eq(1).all()
    assert torch.bincount(match.float().argmax(1), minlength=4).min() > n // 8  # every corner used
    # inside the patch the gray level codes the class; outside, the original image is untouched
    img = d.x[:, 0]
    expected = patch_value(code)[:, None, None].expand(n, h, w)
    assert torch.equal(img[patch], expected[patch])
    assert torch.equal(img[~patch], base.x[:, 0][~patch])
    assert d.x.min() >= 0 and d.x.max() <= 1
    if split == "train":
        assert torch.equal(code, d.y)
    else:
        assert 0.05 < (code == d.y).float().mean() < 0.2  # random code: right ~10 % of the time
        assert torch.bincount(code, minlength=10).min() > 0
    # digit mask: bright original pixels, never inside the patch; the patch hides almost no digit
    orig = base.x[:, 0] > 0.1
    assert not (digit & patch).any() and torch.equal(digit, orig & ~patch)
    assert (orig & patch).sum() < 0.001 * orig.sum()
    assert digit.flatten(1).any(1).all()


@pytest.mark.parametrize("split", ["train", "test"])
def test_decoy_mnist5k(split):
    base = load_dataset("mnist5k", split)
    d = load_dataset("decoy-mnist5k", split)
    _check_decoy(base, d, split)
    again = load_dataset("decoy-mnist5k", split)
    assert torch.equal(again.x, d.x) and torch.equal(again.extras["patch_mask"], d.extras["patch_mask"])
    assert not torch.equal(add_decoy(base, split, seed=1).extras["patch_mask"], d.extras["patch_mask"])
    assert d.subset(10).extras["digit_mask"].shape == (10, 28, 28)
    assert patch_value(torch.tensor([0, 9])).tolist() == pytest.approx([1.0, 30 / 255])


@needs_mnist
def test_decoy_mnist_original():
    base = load_dataset("mnist", "test", mnist_dir(), download=False)
    d = load_dataset("decoy-mnist", "test", mnist_dir(), download=False)
    assert len(d) == 10000 and d.name == "decoy-mnist"
    _check_decoy(base, d, "test")


def test_decoy_needs_gray_images():
    rgb = TensorData(torch.zeros(2, 3, 32, 32), torch.zeros(2, dtype=torch.long), "c")
    with pytest.raises(DataError, match="single-channel"):
        add_decoy(rgb, "train")
    assert PATCH == 4


# ---------------------------------------------------------------- augmentation

def test_crop_flip_shapes_and_determinism():
    x = torch.rand(16, 3, 32, 32)
    a = crop_flip(x, torch.Generator().manual_seed(3))
    b = crop_flip(x, torch.Generator().manual_seed(3))
    c = crop_flip(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype and a.is_contiguous()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_flip_is_a_padded_crop_or_its_mirror():
    n, ch, h, w, pad = 3000, 2, 6, 7, 4
    img = torch.arange(1, ch * h * w + 1, dtype=torch.float32).reshape(ch, h, w)  # distinct, nonzero
    out = crop_flip(img.expand(n, ch, h, w).contiguous(), torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(img, (pad,) * 4)
    cands = torch.stack([win.flip(-1) if f else win
                         for f in (0, 1) for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)
                         for win in [padded[:, oy:oy + h, ox:ox + w]]])  # 162 candidates
    hits = (out[:, None] == cands[None]).flatten(2).all(2)  # n x 162
    assert hits.sum(1).eq(1).all()  # each output is exactly one crop (flipped or not)
    which = hits.float().argmax(1)
    counts = torch.bincount(which, minlength=len(cands))
    assert (counts > 0).all()  # every offset, with and without flip, occurs
    assert 0.45 < (which >= len(cands) // 2).float().mean() < 0.55  # flips half the time
    assert counts.max() < 3 * n / len(cands)  # roughly uniform


# ---------------------------------------------------------------- loader

def _toy(n=37):
    return TensorData(torch.rand(n, 1, 4, 4), torch.arange(n) % 10, "toy")


def test_loader_covers_every_index_once_and_is_deterministic():
    data = _toy()
    loader = TensorLoader(data, 8, shuffle=True, seed=5)
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == 5
        idx = torch.cat([b[2] for b in batches])
        assert sorted(idx.tolist()) == list(range(len(data)))
        for x, y, i in batches:
            assert torch.equal(x, data.x[i]) and torch.equal(y, data.y[i])
        orders.append(idx)
    assert torch.equal(orders[0], orders[2]) and not torch.equal(orders[0], orders[1])
    other = TensorLoader(data, 8, shuffle=True, seed=5)
    assert torch.equal(torch.cat([b[2] for b in other]), orders[0])
    assert not torch.equal(torch.cat([b[2] for b in TensorLoader(data, 8, shuffle=True, seed=6)]), orders[0])
    assert len(TensorLoader(data, 8, drop_last=True)) == 4
    with pytest.raises(SgtlabError):
        TensorLoader(data, 0)
    with pytest.raises(SgtlabError):
        TensorLoader(data, 9, world_size=2)


@pytest.mark.parametrize("augment", [None, crop_flip])
def test_loader_two_ranks_match_one_process(augment):
    data = TensorData(torch.rand(40, 3, 8, 8), torch.arange(40) % 10, "toy")
    one = TensorLoader(data, 8, shuffle=True, seed=1, augment=augment)
    ranks = [TensorLoader(data, 8, shuffle=True, seed=1, augment=augment, rank=r, world_size=2) for r in (0, 1)]
    for ld in (one, *ranks):
        ld.set_epoch(3)
    for (x, y, i), (x0, y0, i0), (x1, y1, i1) in zip(one, *ranks):
        assert len(i0) == len(i1) == 4
        assert sorted(torch.cat([i0, i1]).tolist()) == sorted(i.tolist())
        merged = torch.empty_like(x)
        merged[0::2], merged[1::2] = x0, x1
        assert torch.equal(merged, x)  # the same (augmented) images as one process
        assert torch.equal(torch.cat([y0, y1]).sort().values, y.sort().values)


def test_loaded_data_carries_its_class_names_and_the_saliency_figures_use_them(tmp_path):
    from PIL import Image

    from sgtlab.evaluate.interpretability import interpretability_metrics

    assert load_dataset("mnist5k", "test").subset(3).classes == tuple("0123456789")
    assert dataset_info("fashion-mnist").classes[9] == "Ankle boot" and len(dataset_info("cifar10").classes) == 10
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i + (c == "dog") * 20, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path / 'imgs'},size=8,test=0.5", "test")
    assert data.classes == ("cat", "dog")
    assert TensorData(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), "mine").classes == ()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
    res = interpretability_metrics(model, data, ["grad"], ["entropy"], n_examples=4)
    assert res["examples"]["class_names"] == [data.classes[i] for i in res["examples"]["labels"]]
