"""Loading a checkpoint together with a matching test split, checked before any work."""
from __future__ import annotations

from sgtlab.data import dataset_info, load_dataset
from sgtlab.device import resolve_device
from sgtlab.errors import SgtlabError
from sgtlab.train.checkpoint import load_model


def load_model_and_data(run, dataset: str | None, data_dir, n: int | None, device: str = "auto",
                        split: str = "test", verify: bool = True):
    """`verify=False` (--no-verify), or a run trained with --no-verify, skips the data files' md5 check."""
    if n is not None and n < 1:
        raise SgtlabError(f"--n must be >= 1, got {n}")
    dev = resolve_device(device)
    model, meta = load_model(run, dev)
    name = dataset or meta["arch"].get("dataset")
    if name is None or (meta["arch"].get("user_model") and dataset is None):
        raise SgtlabError(f"{run} was trained on tensors given in Python, not on a registered data set: "
                          f"pass --dataset NAME")
    info = dataset_info(name)
    arch = meta["arch"]
    if (info.shape[0], info.num_classes) != (arch["in_channels"], arch["num_classes"]):
        raise SgtlabError(f"the model takes {arch['in_channels']}-channel images and {arch['num_classes']} classes; "
                          f"{name} has {info.shape[0]} channels and {info.num_classes} classes")
    verify = verify and meta.get("config", {}).get("verify", True)
    data = load_dataset(name, split, data_dir, verify=verify).subset(n)
    return model, meta, data
