"""The configuration of one training run; every field is a `sgtlab train` option."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sgtlab.errors import SgtlabError
from sgtlab.train.methods import MethodConfig


def opt(default, help: str, **kw):
    """A dataclass field that carries its CLI help text."""
    return field(default=default, metadata={"help": help, **kw})


LIMITS = {"epochs": (None, 100_000), "batch_size": (None, 1 << 24)}  # beyond: surely a typo


@dataclass
class TrainConfig:
    dataset: str = opt("mnist5k", "data set: a name (mnist5k, mnist, fashion-mnist, cifar10, cifar100, pcam, "
                                  "...), folder:PATH[,size=N][,test=F][,skip-bad] (class/image.ext) or npz:PATH "
                                  "(see docs/data.md)")
    model: str | None = opt(None, "model name (default: the data set's default model)")
    method: str = opt("st", "training method name")
    epochs: int = opt(5, "number of epochs")
    batch_size: int = opt(128, "global batch size")
    lr: float = opt(0.01, "learning rate")
    optimizer: str = opt("sgd", "optimizer", choices=("sgd", "adam"))
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(0.0, "weight decay")
    schedule: str = opt("constant", "learning-rate schedule over epochs", choices=("constant", "cosine", "step"))
    seed: int = opt(0, "random seed (same seed and data give the same weights on CPU)")
    random_labels: bool = opt(False, "train on the training labels randomly permuted (seeded by --seed): the "
                                     "model of the label-randomisation sanity check (Adebayo et al. 2018)")
    augment: bool = opt(False, "random crop (padding 4) and horizontal flip, on batches (for CIFAR-10)")
    train_subset: int | None = opt(None, "use only the first N training images")
    eval_subset: int | None = opt(None, "evaluate each epoch on N test images (a seeded class-stratified subset, the same for every run)")
    device: str = opt("auto", "device", choices=("auto", "cpu", "cuda"))
    amp: str = opt("none", "mixed precision on CUDA", choices=("none", "bf16"))
    channels_last: bool = opt(False, "use the channels_last memory format (helps convolutions on GPUs)")
    cuda_graphs: bool = opt(False, "on CUDA, replay the model's training forward and backward as CUDA graphs "
                                   "(same numbers, fewer launches; not yet measured on a GPU, so off by default; "
                                   "see docs/scale.md)")
    data_dir: str | None = opt(None, "folder of the data files (default: $SGTLAB_DATA)")
    verify: bool = opt(True, "md5-check data files against the official release; --no-verify for files you made "
                             "yourself in the same format (parsing stays as strict)")
    method_cfg: MethodConfig = field(default_factory=MethodConfig)

    def validate(self, registered: bool = True) -> "TrainConfig":
        """`registered=False`: the data and model are given as objects (`sgtlab.fit`), not by name."""
        from sgtlab.validate import SEED_LIMIT, check_fields

        check_fields(self, LIMITS | {"seed": (0, SEED_LIMIT)})  # types, finite values, sizes
        if self.epochs < 1:
            raise SgtlabError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SgtlabError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise SgtlabError(f"learning rate must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise SgtlabError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise SgtlabError(f"weight decay must be >= 0, got {self.weight_decay}")
        for name in ("train_subset", "eval_subset"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise SgtlabError(f"{name.replace('_', '-')} must be >= 1, got {v}")
        from sgtlab.data import DATASETS
        from sgtlab.models import MODELS
        from sgtlab.train.methods import METHODS

        if registered:
            DATASETS.get(self.dataset)
            if self.model is not None:
                MODELS.get(self.model)
        METHODS.get(self.method)
        self.method_cfg.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        mc = d.pop("method_cfg", {}) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            from sgtlab.validate import list_names

            raise SgtlabError(f"unknown training options: {list_names(unknown)}")
        return cls(**d, method_cfg=MethodConfig.from_dict(mc))
