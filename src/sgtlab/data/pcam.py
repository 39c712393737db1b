"""PCAM (PatchCamelyon, Veeling et al. 2018): 96 x 96 x 3 histopathology patches, label 1 when the
centre 32 x 32 holds tumour tissue. The official HDF5 files
`camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5` (gunzipped from Zenodo record 2546921),
read through h5py (`pip install sgtlab[pcam]`) in chunks into the uint8 cache of
`sgtlab.data.cache`: 262,144 training patches are 7 GB as uint8 (29 GB as float32), memory-mapped.

Not md5-checked: the published md5s are of the `.h5.gz` downloads, not of the files read here;
the structure is checked instead (uint8 `x` of N x 96 x 96 x 3, `y` of N 0/1 labels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from sgtlab.data.base import DatasetInfo, TensorData, data_root, register_dataset
from sgtlab.data.cache import build_cache, cache_dir, fingerprint, open_cache
from sgtlab.errors import DataError
from sgtlab.validate import one_line

NAME = "pcam"
SPLITS = {"train": "train", "test": "test", "valid": "valid"}
SHAPE = (96, 96, 3)
CHUNK = 512  # images read at a time: 14 MB
URL = "https://zenodo.org/record/2546921"
_HOW_TO = (f"download camelyonpatch_level_2_split_{{train,test}}_{{x,y}}.h5.gz from {URL}, gunzip them into "
           f"DIR/pcam (or DIR), then pass --data-dir DIR or set SGTLAB_DATA=DIR")


def files(split: str) -> tuple[str, str]:
    s = SPLITS[split]
    return f"camelyonpatch_level_2_split_{s}_x.h5", f"camelyonpatch_level_2_split_{s}_y.h5"


def locate(split: str, data_dir) -> tuple[Path, Path]:
    root = data_root(data_dir)
    names = files(split)
    for folder in (root / NAME, root):
        if all((folder / n).is_file() for n in names):
            return folder / names[0], folder / names[1]
    gz = [n for n in names if (root / NAME / (n + ".gz")).is_file() or (root / (n + ".gz")).is_file()]
    hint = f" ({', '.join(g + '.gz' for g in gz)} found: gunzip it)" if gz else ""
    raise DataError(f"{NAME}: missing {' and '.join(names)} in {root / NAME} or {root}{hint}; {_HOW_TO}")


def _h5py():
    try:
        import h5py
    except ImportError:
        raise DataError("PCAM is read with h5py: pip install 'sgtlab[pcam]' (or pip install h5py)") from None
    return h5py


def _open(path: Path, key: str):
    """The HDF5 file and its data set `key`, checked: a data set (not a group), of one or more
    dimensions, stored in the file itself (external storage or a virtual data set could make sgtlab
    read any file, e.g. /etc/passwd, into a cache), whose declared size the file can hold."""
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path} is not a readable HDF5 file ({one_line(e)}); {_HOW_TO}") from None
    try:
        keys = ", ".join(sorted(f.keys())[:5]) or "nothing"
        d = f.get(key)
        if not isinstance(d, h5py.Dataset):
            kind = "no" if d is None else "a group, not a"
            raise DataError(f"{path} has {kind} dataset {key!r} (it holds {keys}); is it a PCAM file?")
        if d.ndim < 1:
            raise DataError(f"{path}: {key!r} is a single value, not an array of {'images' if key == 'x' else 'labels'}")
        if d.is_virtual or d.external:
            raise DataError(f"{path}: {key!r} is stored outside the file (external storage or a virtual data set), "
                            f"which sgtlab does not read; use the official PCAM files")
        declared = int(np.prod(d.shape)) * d.dtype.itemsize
        if d.compression is None and declared > 0 and d.id.get_storage_size() < declared:
            raise DataError(f"{path}: {key!r} declares {d.shape} ({declared} bytes) but the file holds "
                            f"{d.id.get_storage_size()}; the file is damaged or truncated; {_HOW_TO}")
    except DataError:
        f.close()
        raise
    except (OSError, ValueError, TypeError, KeyError) as e:
        f.close()
        raise DataError(f"{path} is not a readable PCAM file ({one_line(e)[:150]}); {_HOW_TO}") from None
    return f, d


def _chunks(xp: Path, yp: Path):
    fx, x = _open(xp, "x")
    try:
        fy, y = _open(yp, "y")
    except DataError:
        fx.close()
        raise
    try:
        if x.dtype != np.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != SHAPE:
            raise DataError(f"{xp}: 'x' must be uint8 N x 96 x 96 x 3, got {x.dtype} {x.shape}")
        if len(y) != len(x) or int(np.prod(y.shape[1:])) != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{yp}: 'y' must hold one integer label per image ({len(x)}), got {y.dtype} {y.shape}")
        for s in range(0, len(x), CHUNK):
            try:
                xb, yb = x[s:s + CHUNK], np.asarray(y[s:s + CHUNK]).reshape(-1)
            except OSError as e:  # a truncated file fails when its chunks are read
                raise DataError(f"{xp}: cannot read images {s}..{s + CHUNK} ({e}); the file is damaged; "
                                f"{_HOW_TO}") from None
            if yb.size and not np.isin(yb, (0, 1)).all():
                raise DataError(f"{yp}: labels must be 0 or 1, got {np.unique(yb)[:5].tolist()}")
            yield xb.transpose(0, 3, 1, 2), yb.astype(np.int64)
    finally:
        fx.close()
        fy.close()


def load_pcam(split: str = "train", data_dir=None, download: bool = True) -> TensorData:
    """A split of PCAM ('train', 'test'; also 'valid' from Python), memory-mapped uint8."""
    if split not in SPLITS:
        raise DataError(f"PCAM splits are {', '.join(SPLITS)}, got {split!r}")
    xp, yp = locate(split, data_dir)
    fp = fingerprint([xp.resolve(), yp.resolve()])
    folder = cache_dir(xp, "pcam")
    cached = open_cache(folder, fp) or build_cache(folder, fp, (3, 96, 96), _chunks(xp, yp),
                                                   {"source": str(xp), "classes": ["normal", "tumour"]})
    return TensorData(cached.x, cached.y, NAME)


# mean as measured over the training split by github.com/WalterSimoncini/PatchCamelyon-Medical-Imaging;
# std there is a mean of per-image stds (a slight under-estimate of the pooled one). They only
# condition the model's first layer.
register_dataset(DatasetInfo(
    NAME, load_pcam, (3, 96, 96), 2, (0.7007, 0.5384, 0.6916), (0.1818, 0.2008, 0.1648), "resnet18",
    "PCAM (PatchCamelyon), 262,144/32,768 96x96 histopathology patches, tumour or not (HDF5 files; "
    "needs h5py: sgtlab[pcam]); uint8 cache, memory-mapped", ("normal", "tumour")))
