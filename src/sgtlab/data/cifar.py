"""CIFAR-10, python version: the `cifar-10-batches-py` folder or `cifar-10-python.tar.gz`.

The batches are pickles. We never run pickled code: `SafeUnpickler` resolves only the three
globals a numpy array needs (from a fixed table, without importing anything) and refuses every
other one, so a batch whose pickle would call `os.system` & co. is a DataError, not an exploit.
The tar.gz is read in memory (no extraction: nothing is written next to the user's files).
"""
from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from sgtlab.data.base import DatasetInfo, TensorData, check_md5, data_root, register_dataset
from sgtlab.data.download import download_file
from sgtlab.errors import DataError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover  (numpy 1.x)
    from numpy.core.multiarray import _reconstruct

NAME = "cifar10"
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
URLS = ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
MD5 = {  # of the official release (the same values torchvision checks)
    ARCHIVE: "c58f30108f718f92721af3b95e74349a",
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
_HOW_TO = (f"download {URLS[0]} and put {ARCHIVE} (or its extracted {FOLDER}/ folder) in DIR or DIR/{NAME}, "
           f"then pass --data-dir DIR or set SGTLAB_DATA=DIR")

# The only globals a pickled numpy uint8 array needs. Both spellings of _reconstruct's module:
# the official files were written by numpy 1.x (numpy.core), numpy 2 writes numpy._core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler for plain data plus numpy arrays: every other global is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id")


def safe_load(raw: bytes, what: str) -> object:
    """Unpickle `raw` with SafeUnpickler; any failure is a DataError naming `what`.

    latin1 as torchvision does: the Python 2 strings of the official files (keys, pixel buffers)
    come back as str, which numpy's array state accepts."""
    try:
        return SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused"):
            raise DataError(f"{what} is not a plain CIFAR-10 batch: its pickle {e} (it would run code); "
                            f"nothing was executed. Delete it and {_HOW_TO}") from None
        raise DataError(f"{what} is not a readable CIFAR-10 batch ({e}); delete it and {_HOW_TO}") from None
    except Exception as e:  # garbage input can raise almost anything from the unpickler
        raise DataError(f"{what} is not a readable CIFAR-10 batch ({type(e).__name__}: {e}); "
                        f"delete it and {_HOW_TO}") from None


def parse_batch(obj: object, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch dict -> (uint8 images N x 3 x 32 x 32, int64 labels N), checked."""
    if not isinstance(obj, dict):
        raise DataError(f"{what}: expected a dict, got {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{what}: 'data' must be a uint8 array of N x 3072, got {desc}")
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise DataError(f"{what}: 'labels' must be a list of integers, got {type(labels).__name__}")
    try:
        y = np.asarray(labels)
        if y.dtype.kind not in "iub" and y.size:  # no floats, strings or objects cast to numbers
            raise TypeError
        y = y.astype(np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{what}: 'labels' is not a list of integers") from None
    if y.shape != (len(data),):
        raise DataError(f"{what}: {len(data)} images but labels of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{what}: labels must be 0..9, got {y.min()}..{y.max()}")
    return data.reshape(-1, 3, 32, 32), y  # rows are 1024 red, 1024 green, 1024 blue, row-major


MAX_BATCH_BYTES = 64 << 20     # an official batch is 31 MB
MAX_ARCHIVE_BYTES = 512 << 20  # the official archive is 163 MB


def _read_folder(folder: Path, names: list[str], verify: bool) -> list[tuple[bytes, str]]:
    out = []
    for n in names:
        p = folder / n
        if verify:
            check_md5(p, MD5[n])
        try:
            if p.stat().st_size > MAX_BATCH_BYTES:
                raise DataError(f"{p}: larger than {MAX_BATCH_BYTES} bytes, not a CIFAR-10 batch; {_HOW_TO}")
            out.append((p.read_bytes(), str(p)))
        except OSError as e:
            raise DataError(f"cannot read {p} ({e.strerror}); check its permissions") from None
    return out


def _read_archive(path: Path, names: list[str], verify: bool) -> list[tuple[bytes, str]]:
    if verify:
        check_md5(path, MD5[ARCHIVE])
    wanted = {f"{FOLDER}/{n}": n for n in names}
    found: dict[str, bytes] = {}
    try:
        if path.stat().st_size > MAX_ARCHIVE_BYTES:
            raise DataError(f"{path}: larger than {MAX_ARCHIVE_BYTES} bytes, not the CIFAR-10 archive; {_HOW_TO}")
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # read members in memory; nothing is extracted to disk
                if member.name in wanted and member.isfile():
                    if member.size > MAX_BATCH_BYTES:
                        raise DataError(f"{path}: {member.name} is {member.size} bytes, not a CIFAR-10 batch; "
                                        f"{_HOW_TO}")
                    found[wanted[member.name]] = tar.extractfile(member).read(MAX_BATCH_BYTES + 1)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable tar.gz ({e}); delete it and {_HOW_TO}") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{path} lacks {', '.join(FOLDER + '/' + n for n in missing)}; delete it and {_HOW_TO}")
    # Members are not md5-checked one by one: the archive's own md5 covers them.
    return [(found[n], f"{path}:{FOLDER}/{n}") for n in names]


def locate(split: str, data_dir, download: bool) -> tuple[str, Path]:
    """('folder', path) or ('archive', path) holding the split; downloads the archive if allowed."""
    root = data_root(data_dir)
    names = FILES[split]
    for base in (root / NAME, root):
        for folder in (base / FOLDER, base):  # also accept --data-dir pointing at the batches folder
            if all((folder / n).is_file() for n in names):
                return "folder", folder
        if (base / ARCHIVE).is_file():
            return "archive", base / ARCHIVE
    looked = f"{root / NAME} or {root}"
    missing = f"{ARCHIVE} (or {FOLDER}/ with {', '.join(names)})"
    if not download:
        raise DataError(f"{NAME}: missing {missing} in {looked}; {_HOW_TO}")
    target = root / NAME / ARCHIVE
    try:
        download_file(URLS, target, MD5[ARCHIVE])
    except DataError as e:
        raise DataError(f"{NAME}: missing {missing} in {looked} and the download failed (offline?); "
                        f"{_HOW_TO}. Detail: {e}") from None
    return "archive", target


def load_cifar10(split: str = "train", data_dir=None, download: bool = True, verify: bool = True) -> TensorData:
    """Load a split. `verify=False` skips the md5 check against the official release: only for
    files one made oneself in the same format (the tests do); the parsing stays just as strict."""
    kind, path = locate(split, data_dir, download)
    read = _read_folder if kind == "folder" else _read_archive
    parts = [parse_batch(safe_load(raw, what), what) for raw, what in read(path, FILES[split], verify)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    x = torch.from_numpy(images).float().div_(255.0)
    return TensorData(x, torch.from_numpy(labels), NAME)


register_dataset(DatasetInfo(
    NAME, load_cifar10, (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "resnet18-cifar",
    "CIFAR-10, 50k/10k 32x32 colour images (python version: cifar-10-batches-py or the tar.gz)"))
