"""Data sets: images N x C x H x W (float in [0, 1], or uint8 in memory or memory-mapped, converted
per batch) with int64 labels.

`load_dataset(name, split)` is the one entry point; each data set is one registered loader, and
`folder:PATH` / `npz:PATH` name image folders and array files.
"""
from sgtlab.data.base import DATASETS, DatasetInfo, TensorData, dataset_info, load_dataset
from sgtlab.data.loader import TensorLoader

# Importing the modules registers their loaders.
from sgtlab.data import arrays, folder, mnist, mnist5k, pcam  # noqa: E402,F401
from sgtlab.data.arrays import from_arrays

try:  # loaders added by later modules
    from sgtlab.data import cifar  # noqa: F401
except ImportError:  # pragma: no cover
    pass
try:
    from sgtlab.data import decoy  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["DATASETS", "DatasetInfo", "TensorData", "TensorLoader", "dataset_info", "from_arrays", "load_dataset"]
