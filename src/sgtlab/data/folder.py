"""Image folders: `folder:PATH` for the `class_name/image.ext` layout (ImageNet's train/ and val/
after the usual sorting into class folders, Caltech-101's `101_ObjectCategories/`, one's own images).

Options after the path: `size=N` (default 224: shorter side resized to N, then the centre N x N
crop), `channels=1|3` (default 3: grey images are replicated), `test=F` (the test fraction of the
seeded stratified split made when the folder has none; default 0.2), `skip-bad` (skip files Pillow
cannot decode, with a count, instead of stopping at the first with an error naming it).

PATH holding `train/` and `val/` (or `test/`, `valid/`, `validation/`) class folders uses that
split; otherwise PATH's sub-folders are the classes and the split is made here, fixed (seed 0).
Images are decoded once, in threads (Pillow releases the GIL), into the uint8 cache
(`sgtlab.data.cache`), ordered train then test, so each split is a slice of one memory map.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sgtlab.data.base import DATASETS, DatasetInfo, TensorData
from sgtlab.data.cache import Cached, build_cache, cache_dir, fingerprint, open_cache
from sgtlab.data.spec import parse_spec, stratified_split
from sgtlab.errors import DataError
from sgtlab.validate import MAX_CLASSES

OPTIONS = {"size": int, "channels": int, "test": float, "skip_bad": bool}
DEFAULT_SIZE = 224
TEST_FRACTION = 0.2
SPLIT_NAMES = {"train": ("train",), "test": ("val", "test", "valid", "validation")}
IGNORED = {"thumbs.db", "desktop.ini"}
CHUNK = 256
MAX_PIXELS = 40_000_000  # pixels of one image (a 6300 x 6300 photo): more is refused before decoding
DECODE = 2               # the decoding's version, in the cache key: 2 crops before it resizes


def default_model(channels: int, size: int) -> str:
    """The default model for images of this size: the small CNN for MNIST-like images, ResNet-18
    in its CIFAR form up to 32 px, in its ImageNet form above."""
    if channels == 1 and size <= 28:
        return "sgt-cnn"
    return "resnet18-cifar" if size <= 32 else "resnet18"


def _classes(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def _files(class_dir: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames)
                if not f.startswith(".") and f.lower() not in IGNORED]
    return out


def list_images(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Every file under root/<class>/ (hidden files and folders skipped), sorted, with its class index."""
    paths, labels = [], []
    for i, c in enumerate(classes):
        if (root / c).is_dir():
            files = _files(root / c)
            paths += files
            labels += [i] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def decode(path: Path, size: int, channels: int) -> np.ndarray:
    """One image as uint8 C x size x size: the centre square (side = the shorter side) resized to
    `size` (antialiased bilinear). The square is cut before any resize, so a 200000 x 1 image costs
    one pixel, not a 200000 x `size` upscale; more than MAX_PIXELS pixels are refused from the
    header, before decoding."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    # Pillow's own check warns from 89 million pixels (a second line on the terminal): this one is stricter
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    with Image.open(path) as im:
        w, h = im.size
        if w < 1 or h < 1 or w * h > MAX_PIXELS:
            raise ValueError(f"an image of {w} x {h} pixels (the limit is {MAX_PIXELS} pixels)")
        im.draft(mode, (size, size))  # JPEG: decode at a reduced scale that is still >= size (fast)
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side)).convert(mode)
        if side != size:
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _try_decode(args):
    path, size, channels = args
    try:
        return decode(path, size, channels), None
    except Exception as e:  # Pillow raises many types on bad files (OSError, ValueError, SyntaxError...)
        return None, f"{type(e).__name__}: {e}"


def _decoded_chunks(paths: list[Path], labels: np.ndarray, size: int, channels: int, skip_bad: bool,
                    bad: list[int], what: str):
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for s in range(0, len(paths), CHUNK):
            part = paths[s:s + CHUNK]
            results = list(pool.map(_try_decode, [(p, size, channels) for p in part]))
            keep = []
            for i, (img, err) in enumerate(results):
                if img is None:
                    if not skip_bad:
                        raise DataError(f"{what}: {part[i]} is not a readable image ({err}); remove it, or add "
                                        f"',skip-bad' after the path to skip such files")
                    bad.append(s + i)
                else:
                    keep.append(i)
            if keep:
                yield np.stack([results[i][0] for i in keep]), labels[s:s + CHUNK][keep]


def _cached_split(root: Path, classes: list[str], size: int, channels: int, skip_bad: bool, what: str,
                  order: np.ndarray | None = None, n_train: int | None = None) -> Cached:
    """The cache of the images under `root` (in `order`, when given), built when missing or stale."""
    paths, labels = list_images(root, classes)
    if order is not None:
        paths, labels = [paths[i] for i in order], labels[order]
    key = f"size={size},channels={channels},skip_bad={skip_bad},classes={len(classes)},decode={DECODE}"
    fp = fingerprint(paths, f"{key}|{n_train}|{','.join(classes)}")
    folder = cache_dir(root, key + ("" if n_train is None else ",split"))
    cached = open_cache(folder, fp)
    if cached is not None:
        return cached
    if not paths:
        raise DataError(f"{what}: no image files under {root}/<class>/")
    bad: list[int] = []
    meta = {"source": str(root), "classes": classes, "size": size, "channels": channels}

    def chunks():  # fills in what is known once every file was tried (meta.json is written last)
        yield from _decoded_chunks(paths, labels, size, channels, skip_bad, bad, what)
        meta["skipped"] = [str(paths[i]) for i in bad]
        meta["n_train"] = None if n_train is None else n_train - sum(i < n_train for i in bad)

    cached = build_cache(folder, fp, (channels, size, size), chunks(), meta)
    if bad:
        import sys

        print(f"sgtlab: {what}: skipped {len(bad)} unreadable file(s) (first: {paths[bad[0]]}); the list is in "
              f"{folder / 'meta.json'}", file=sys.stderr)
    return cached


def _split_dirs(root: Path) -> dict[str, Path] | None:
    found = {}
    for split, names in SPLIT_NAMES.items():
        for n in names:
            if (root / n).is_dir():
                found[split] = root / n
                break
    return found if len(found) == 2 else None


class ImageFolder:
    """One `folder:PATH,...` data set: both splits' caches, built on first use."""

    def __init__(self, name: str):
        self.name = name
        path, opts = parse_spec(name, OPTIONS)
        self.size = opts.get("size", DEFAULT_SIZE)
        self.channels = opts.get("channels", 3)
        self.test = opts.get("test", TEST_FRACTION)
        self.skip_bad = opts.get("skip_bad", False)
        if not 8 <= self.size <= 1024:
            raise DataError(f"{name}: size must be in 8..1024, got {self.size}")
        if self.channels not in (1, 3):
            raise DataError(f"{name}: channels must be 1 or 3, got {self.channels}")
        if not 0 < self.test < 1:
            raise DataError(f"{name}: test must be a fraction in (0, 1), got {self.test}")
        if not path.is_dir():
            raise DataError(f"{name}: {path} is not a folder; give a folder of class folders (class/image.ext)")
        self.path = path
        dirs = _split_dirs(path)
        args = (self.size, self.channels, self.skip_bad)
        if dirs:
            self.classes = _classes(dirs["train"])
            extra = sorted(set(_classes(dirs["test"])) - set(self.classes))
            if extra:
                raise DataError(f"{name}: {dirs['test']} has classes that {dirs['train']} lacks: "
                                f"{', '.join(extra[:5])}")
            self._check_classes()
            self.caches = {s: _cached_split(d, self.classes, *args, what=name) for s, d in dirs.items()}
            self.slices = {"train": slice(None), "test": slice(None)}
            self.origin = "the folder's own split"
            self._check_splits()
        else:
            self.classes = _classes(path)
            self._check_classes()
            _, labels = list_images(path, self.classes)
            split = stratified_split(labels, self.test)
            order = np.concatenate([split["train"], split["test"]])
            cached = _cached_split(path, self.classes, *args, what=name, order=order, n_train=len(split["train"]))
            n_train = cached.meta.get("n_train")
            if isinstance(n_train, bool) or not isinstance(n_train, int) or not 0 <= n_train <= len(cached.y):
                raise DataError(f"{name}: the image cache of {path} is damaged (its meta.json has no valid n_train); "
                                f"delete the cache folder (.sgtlab-cache beside the data, or $SGTLAB_CACHE)")
            self.caches = {"train": cached, "test": cached}
            self.slices = {"train": slice(0, n_train), "test": slice(n_train, None)}
            self.origin = f"a seeded stratified split, test fraction {self.test}"
            self._check_splits()

    def _check_classes(self):
        if len(self.classes) < 2:
            raise DataError(f"{self.name}: found {len(self.classes)} class folder(s) in {self.path}; "
                            f"the layout is PATH/<class>/<image> with at least two classes")
        if len(self.classes) > MAX_CLASSES:
            raise DataError(f"{self.name}: {len(self.classes)} class folders in {self.path}, more than the "
                            f"{MAX_CLASSES} a model can have; is PATH the folder of class folders?")

    def _check_splits(self):
        """Both splits hold images: an empty test split gives a run without a test accuracy, whose
        checkpoint the other commands cannot evaluate."""
        for split in ("train", "test"):
            if len(self.caches[split].y[self.slices[split]]) == 0:
                raise DataError(f"{self.name}: the {split} split is empty (each class needs two images or more "
                                f"for a test split to be made, and not all of a split may be skipped); add images, "
                                f"or give PATH train/ and val/ class folders")

    def load(self, split: str = "train", data_dir=None, download: bool = True) -> TensorData:
        c, sl = self.caches[split], self.slices[split]
        return TensorData(c.x[sl], c.y[sl], self.name)

    def info(self) -> DatasetInfo:
        train = self.caches["train"]
        n = len(train.y)
        idx = np.arange(n)[self.slices["train"]]
        mean, std = train.mean_std(idx)
        return DatasetInfo(self.name, self.load, (self.channels, self.size, self.size), len(self.classes), mean, std,
                           default_model(self.channels, self.size),
                           f"image folder {self.path}: {len(self.classes)} classes, {self.size} px, {self.origin}",
                           tuple(self.classes))


def resolve(name: str) -> DatasetInfo:
    return ImageFolder(name).info()


DATASETS.register_prefix("folder", resolve, OPTIONS)
