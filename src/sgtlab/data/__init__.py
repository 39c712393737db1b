"""Data sets held in memory as float tensors in [0, 1] (N x C x H x W) with int64 labels.

`load_dataset(name, split)` is the one entry point; each data set is one registered loader.
"""
from sgtlab.data.base import DATASETS, DatasetInfo, TensorData, dataset_info, load_dataset
from sgtlab.data.loader import TensorLoader

# Importing the modules registers their loaders.
from sgtlab.data import mnist, mnist5k  # noqa: E402,F401

try:  # loaders added by later modules
    from sgtlab.data import cifar  # noqa: F401
except ImportError:  # pragma: no cover
    pass
try:
    from sgtlab.data import decoy  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["DATASETS", "DatasetInfo", "TensorData", "TensorLoader", "dataset_info", "load_dataset"]
