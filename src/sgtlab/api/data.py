"""Data arguments of the Python API by name: a data-set spec string (`"mnist"`, `"cifar10"`,
`"folder:PATH,size=32"`, `"npz:PATH"`, a plug-in's name) is read with `sgtlab.data.load_dataset`
(the split the function needs), anything else is passed on as it is (tensors, a TensorDataset, a
DataLoader, a TensorData)."""
from __future__ import annotations

from typing import Any


def named_data(data: Any, split: str, what: str = "data") -> Any:
    """`data` read by name when it is a string, else `data` itself."""
    if not isinstance(data, str):
        return data
    from sgtlab.data import DATASETS, load_dataset
    from sgtlab.errors import SgtlabError

    if data not in DATASETS:
        raise SgtlabError(f"{what}: {data!r} is not a data set name; give a name ({', '.join(DATASETS.names())}), "
                          f"folder:PATH[,size=N], npz:PATH, or (x, y) tensors, a TensorDataset or a DataLoader")
    return load_dataset(data, split)


def test_split_of(train: Any) -> Any:
    """The test split of the data set named by `train` (None when train is not a name)."""
    return named_data(train, "test") if isinstance(train, str) else None
