"""CIFAR-10 and CIFAR-100, python versions: the `cifar-10-batches-py` / `cifar-100-python` folder
or the `.tar.gz` it comes in. Images stay uint8 (a quarter of float32's memory); batches become
float on the device (`TensorData.batch`).

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

from dataclasses import dataclass
from functools import partial

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

@dataclass(frozen=True)
class Format:
    """One CIFAR release: where its files are, their md5s, which labels to read."""

    name: str
    folder: str
    archive: str
    urls: list
    files: dict
    md5: dict
    label_key: str
    num_classes: int
    max_batch: int = 64 << 20  # bytes a batch file may have: an official CIFAR-10 batch is 31 MB

    @property
    def how_to(self) -> str:
        return (f"download {self.urls[0]} and put {self.archive} (or its extracted {self.folder}/ folder) in DIR "
                f"or DIR/{self.name}, then pass --data-dir DIR or set SGTLAB_DATA=DIR")


CIFAR10 = Format(NAME, FOLDER, ARCHIVE, URLS, FILES, MD5, "labels", 10)
_C100 = dict(max_batch=192 << 20,  # CIFAR-100's train file is one 155 MB batch
             folder="cifar-100-python", archive="cifar-100-python.tar.gz",
             urls=["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"],
             files={"train": ["train"], "test": ["test"]},
             md5={"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",  # as torchvision checks
                  "train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"})
# both label sets read the same files, from DIR/cifar100 (the coarse one looks there too)
CIFAR100 = Format("cifar100", label_key="fine_labels", num_classes=100, **_C100)
CIFAR100_COARSE = Format("cifar100", label_key="coarse_labels", num_classes=20, **_C100)

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


def safe_load(raw: bytes, what: str, fmt: Format = CIFAR10) -> object:
    """Unpickle `raw` with SafeUnpickler; any failure is a DataError naming `what`.

    latin1 as torchvision does: the Python 2 strings of the official files (keys, pixel buffers)
    come back as str, which numpy's array state accepts."""
    try:
        return SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("refused"):
            raise DataError(f"{what} is not a plain {_title(fmt)} batch: its pickle {e} (it would run code); "
                            f"nothing was executed. Delete it and {fmt.how_to}") from None
        raise DataError(f"{what} is not a readable {_title(fmt)} batch ({e}); delete it and {fmt.how_to}") from None
    except Exception as e:  # garbage input can raise almost anything from the unpickler
        raise DataError(f"{what} is not a readable {_title(fmt)} batch ({type(e).__name__}: {e}); "
                        f"delete it and {fmt.how_to}") from None


def _title(fmt: Format) -> str:
    return "CIFAR-10" if fmt.num_classes == 10 else "CIFAR-100"


def parse_batch(obj: object, what: str, fmt: Format = CIFAR10) -> tuple[np.ndarray, np.ndarray]:
    """A batch dict -> (uint8 images N x 3 x 32 x 32, int64 labels N), checked."""
    if not isinstance(obj, dict):
        raise DataError(f"{what}: expected a dict, got {type(obj).__name__}")
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    data, labels = d.get("data"), d.get(fmt.label_key)
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
        raise DataError(f"{what}: '{fmt.label_key}' is not a list of integers") from None
    if y.shape != (len(data),):
        raise DataError(f"{what}: {len(data)} images but labels of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= fmt.num_classes):
        raise DataError(f"{what}: labels must be 0..{fmt.num_classes - 1}, got {y.min()}..{y.max()}")
    return data.reshape(-1, 3, 32, 32), y  # rows are 1024 red, 1024 green, 1024 blue, row-major


MAX_ARCHIVE_BYTES = 512 << 20  # the official archives are 163 and 161 MB


def _read_folder(folder: Path, names: list[str], verify: bool, fmt: Format = CIFAR10) -> list[tuple[bytes, str]]:
    out = []
    for n in names:
        p = folder / n
        if verify:
            check_md5(p, fmt.md5[n])
        try:
            if p.stat().st_size > fmt.max_batch:
                raise DataError(f"{p}: larger than {fmt.max_batch} bytes, not a {_title(fmt)} batch; {fmt.how_to}")
            out.append((p.read_bytes(), str(p)))
        except OSError as e:
            raise DataError(f"cannot read {p} ({e.strerror}); check its permissions") from None
    return out


def _read_archive(path: Path, names: list[str], verify: bool, fmt: Format = CIFAR10) -> list[tuple[bytes, str]]:
    if verify:
        check_md5(path, fmt.md5[fmt.archive])
    wanted = {f"{fmt.folder}/{n}": n for n in names}
    found: dict[str, bytes] = {}
    try:
        if path.stat().st_size > MAX_ARCHIVE_BYTES:
            raise DataError(f"{path}: larger than {MAX_ARCHIVE_BYTES} bytes, not the {_title(fmt)} archive; "
                            f"{fmt.how_to}")
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # read members in memory; nothing is extracted to disk
                if member.name in wanted and member.isfile():
                    if member.size > fmt.max_batch:
                        raise DataError(f"{path}: {member.name} is {member.size} bytes, not a {_title(fmt)} "
                                        f"batch; {fmt.how_to}")
                    found[wanted[member.name]] = tar.extractfile(member).read(fmt.max_batch + 1)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable tar.gz ({e}); delete it and {fmt.how_to}") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{path} lacks {', '.join(fmt.folder + '/' + n for n in missing)}; "
                        f"delete it and {fmt.how_to}")
    # Members are not md5-checked one by one: the archive's own md5 covers them.
    return [(found[n], f"{path}:{fmt.folder}/{n}") for n in names]


def locate(split: str, data_dir, download: bool, fmt: Format = CIFAR10) -> tuple[str, Path]:
    """('folder', path) or ('archive', path) holding the split; downloads the archive if allowed."""
    root = data_root(data_dir)
    names = fmt.files[split]
    for base in (root / fmt.name, root):
        for folder in (base / fmt.folder, base):  # also accept --data-dir pointing at the batches folder
            if all((folder / n).is_file() for n in names):
                return "folder", folder
        if (base / fmt.archive).is_file():
            return "archive", base / fmt.archive
    looked = f"{root / fmt.name} or {root}"
    missing = f"{fmt.archive} (or {fmt.folder}/ with {', '.join(names)})"
    if not download:
        raise DataError(f"{fmt.name}: missing {missing} in {looked}; {fmt.how_to}")
    target = root / fmt.name / fmt.archive
    try:
        download_file(fmt.urls, target, fmt.md5[fmt.archive])
    except DataError as e:
        raise DataError(f"{fmt.name}: missing {missing} in {looked} and the download failed (offline?); "
                        f"{fmt.how_to}. Detail: {e}") from None
    return "archive", target


def load_cifar(fmt: Format, split: str = "train", data_dir=None, download: bool = True,
               verify: bool = True) -> TensorData:
    """Load a split of `fmt` as uint8 images. `verify=False` skips the md5 check against the official
    release: only for files one made oneself in the same format; the parsing stays just as strict."""
    kind, path = locate(split, data_dir, download, fmt)
    read = _read_folder if kind == "folder" else _read_archive
    parts = [parse_batch(safe_load(raw, what, fmt), what, fmt)
             for raw, what in read(path, fmt.files[split], verify, fmt)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    name = fmt.name if fmt.label_key != "coarse_labels" else "cifar100-coarse"
    return TensorData(torch.from_numpy(images), torch.from_numpy(labels), name)


def load_cifar10(split: str = "train", data_dir=None, download: bool = True, verify: bool = True) -> TensorData:
    return load_cifar(CIFAR10, split, data_dir, download, verify)


def load_cifar100(split: str = "train", data_dir=None, download: bool = True, verify: bool = True,
                  labels: str = "fine") -> TensorData:
    """CIFAR-100 with its 100 fine labels, or its 20 coarse (superclass) labels with labels='coarse'."""
    if labels not in ("fine", "coarse"):
        raise DataError(f"CIFAR-100 labels are 'fine' or 'coarse', got {labels!r}")
    return load_cifar(CIFAR100 if labels == "fine" else CIFAR100_COARSE, split, data_dir, download, verify)


# CIFAR-10's labels 0-9 (batches.meta of the release)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
register_dataset(DatasetInfo(
    NAME, load_cifar10, (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "resnet18-cifar",
    "CIFAR-10, 50k/10k 32x32 colour images (python version: cifar-10-batches-py or the tar.gz)", CIFAR10_CLASSES))
# CIFAR-100's fine labels 0-99 and coarse labels 0-19, in the order of the release's `meta` file
# (fine_label_names, coarse_label_names: alphabetical); fixed like CIFAR-10's, so they are not read
# from a pickle
CIFAR100_CLASSES = tuple("""
    apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy
    bridge bus butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud
    cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl
    hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree
    motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
    plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
    seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper
    table tank telephone television tiger tractor train trout tulip turtle wardrobe whale
    willow_tree wolf woman worm
""".split())
CIFAR100_COARSE_CLASSES = tuple("""
    aquatic_mammals fish flowers food_containers fruit_and_vegetables
    household_electrical_devices household_furniture insects large_carnivores large_man-made_outdoor_things
    large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals non-insect_invertebrates people
    reptiles small_mammals trees vehicles_1 vehicles_2
""".split())
# the usual per-channel statistics of the CIFAR-100 training split
_C100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
register_dataset(DatasetInfo(
    "cifar100", load_cifar100, (3, 32, 32), 100, *_C100_STATS, "resnet18-cifar",
    "CIFAR-100, 50k/10k 32x32 colour images, 100 fine labels (python version: cifar-100-python or the tar.gz)",
    CIFAR100_CLASSES))
register_dataset(DatasetInfo(
    "cifar100-coarse", partial(load_cifar100, labels="coarse"), (3, 32, 32), 20, *_C100_STATS, "resnet18-cifar",
    "CIFAR-100 with its 20 coarse (superclass) labels; the same files as cifar100", CIFAR100_COARSE_CLASSES))
