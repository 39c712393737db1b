"""Loading a checkpoint together with a matching test split, checked before any work."""
from __future__ import annotations

from sgtlab.data import dataset_info, load_dataset
from sgtlab.data.subsets import stratified_or_all
from sgtlab.device import resolve_device
from sgtlab.errors import SgtlabError
from sgtlab.train.checkpoint import load_model


def load_model_and_data(run, dataset: str | None, data_dir, n: int | None, device: str = "auto",
                        split: str = "test", verify: bool = True):
    """The model of `run` and its data set's `split` (`n`: a seeded class-stratified subset of n
    images). `verify=False` (--no-verify), or a run trained with --no-verify, skips the data files'
    md5 check."""
    if n is not None and n < 1:
        raise SgtlabError(f"--n must be >= 1, got {n}")
    dev = resolve_device(device)
    try:
        model, meta = load_model(run, dev)
        name = dataset or meta["arch"].get("dataset")
        if name is None or (meta["arch"].get("user_model") and dataset is None):
            raise SgtlabError(f"{run} was trained on tensors given in Python, not on a registered data set: "
                              f"pass --dataset NAME")
        info = dataset_info(name)
    except SgtlabError as e:
        raise missing_imports(run, e) from None
    arch = meta["arch"]
    if (info.shape[0], info.num_classes) != (arch["in_channels"], arch["num_classes"]):
        raise SgtlabError(f"the model takes {arch['in_channels']}-channel images and {arch['num_classes']} classes; "
                          f"{name} has {info.shape[0]} channels and {info.num_classes} classes")
    verify = verify and meta.get("config", {}).get("verify", True)
    # the same seeded class-stratified images as `sgtlab attack --n` and `reproduce`
    data = stratified_or_all(load_dataset(name, split, data_dir, verify=verify), n)
    return model, meta, data


def missing_imports(run, error: SgtlabError) -> SgtlabError:
    """`error` (an unknown model or data set name) with the hint "add --import MODULE" when the run
    was trained with plug-in modules this process has not imported. Nothing is imported here: a run
    folder from someone else must not run code."""
    import sys

    from sgtlab.train.checkpoint import read_checkpoint

    if "unknown" not in str(error):
        return error
    try:
        wanted = (read_checkpoint(run)[1].get("arch") or {}).get("imports") or []
    except Exception:  # an unreadable checkpoint: its own error says so
        return error
    missing = [m for m in wanted if isinstance(m, str) and m not in sys.modules]
    if not missing:
        return error
    flags = " ".join(f"--import {m}" for m in missing)
    return type(error)(f"{str(error).split(';')[0]}: {run} was trained with {flags}: add {flags} "
                       f"(sgtlab does not import a run's modules by itself)")
