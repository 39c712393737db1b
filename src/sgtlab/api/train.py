"""`sgtlab.fit` and `sgtlab.train_step`: the training methods on your own `nn.Module` and tensors.

`fit` runs the same loop as `sgtlab train` (`sgtlab.train.loop.train_model`): with `out` it writes
the same run folder (config.json, metrics.jsonl, checkpoint.safetensors every epoch), resumes with
`resume=True` to the same weights as an uninterrupted run, and stops on a NaN loss keeping the last
good checkpoint.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgtlab.errors import SgtlabError

#: TrainConfig fields that `fit` sets from its data and model arguments, not from options
_NOT_OPTIONS = ("dataset", "model", "train_subset", "eval_subset", "data_dir", "method_cfg")


def split_options(options: dict[str, Any]):
    """Keyword options -> (TrainConfig fields, MethodConfig), unknown names refused in one line."""
    from sgtlab.train import MethodConfig, TrainConfig

    train_names = {f.name for f in dataclasses.fields(TrainConfig)} - set(_NOT_OPTIONS)
    method_names = {f.name for f in dataclasses.fields(MethodConfig)}
    unknown = sorted(set(options) - train_names - method_names)
    if unknown:
        raise SgtlabError(f"unknown option(s) {', '.join(unknown)}; training options: "
                          f"{', '.join(sorted(train_names))}; method options: {', '.join(sorted(method_names))}")
    train = {k: v for k, v in options.items() if k in train_names}
    method = MethodConfig(**{k: v for k, v in options.items() if k in method_names})
    return train, method


def check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise SgtlabError(f"model must be a torch.nn.Module, got {type(model).__name__} "
                          f"(a registered model by name: sgtlab.models.build_model(name, ...))")
    return model


def user_arch(model: nn.Module, shape: tuple[int, ...], num_classes: int, name: str) -> dict[str, Any]:
    """What a checkpoint says about a model given as an object: its class (`load_model(run,
    model=...)` needs an instance of it), input shape and number of classes, and the data set's name
    when the data came from a registered one."""
    from sgtlab.data import DATASETS

    cls = type(model)
    return {"model": cls.__qualname__, "module": cls.__module__, "user_model": True,
            "in_channels": int(shape[0]), "num_classes": num_classes, "shape": list(shape),
            "dataset": name if name in DATASETS else None}  # None: tensors given in Python


def fit(model: nn.Module, train, test=None, method: str = "st", epochs: int = 5, out: str | Path | None = None,
        *, resume: bool = False, progress: bool = False, tensorboard: bool = False, **options) -> dict[str, Any]:
    """Train `model` in place with a training method (`sgtlab.list_methods()`); return the last
    epoch's metrics (`train` losses, `test_accuracy` when `test` is given, `lr`, `seconds`).

    `train`, `test`: `(x, y)` tensors, a `TensorDataset` or a `DataLoader` (read once into memory),
    images N x C x H x W in [0, 1] (normalisation belongs inside the model), integer labels; or a
    data-set spec (`"mnist"`, `"folder:PATH,size=32"`, `"npz:PATH"`: its train split, and its test
    split as `test` unless given). Adversarial methods train at the data's budget unless `train_eps`
    is given (0.3 for small grey digits, 8/255 for colour images); `config.json` records the values
    used (k, train_eps, step sizes); an option the method does not use is refused.
    `out`: a run folder (checkpoint every epoch, metrics.jsonl, config.json), which every other
    command and function reads; `resume=True` continues a run in `out`. `tensorboard=True`: also log
    to OUT/tensorboard. `options`: any `sgtlab train` option (`batch_size`, `lr`, `optimizer`, `seed`,
    `device`, ...) or method option (`k`, `lam`, `train_eps`, `train_steps`, ...), by its Python name.
    """
    from sgtlab.data.inputs import as_data, check_labels, output_classes
    from sgtlab.train import METHODS, TrainConfig
    from sgtlab.train.loop import train_model
    from sgtlab.train.resolve import check_method_options, resolve_train

    from sgtlab.api.data import named_data, test_split_of

    check_model(model)
    METHODS.get(method)  # unknown name -> the list of methods
    train_opts, method_cfg = split_options(options)
    if test is None:
        test = test_split_of(train)  # fit(model, "cifar10"): its test split measures each epoch
    train_data = as_data(named_data(train, "train", "train data"), what="train data")
    test = named_data(test, "test", "test data")
    test_data = as_data(test, what="test data", shape=tuple(train_data.x.shape[1:])) if test is not None else None
    classes = output_classes(model, train_data.x)
    check_labels(train_data.y, classes, "train data")
    if test_data is not None:
        check_labels(test_data.y, classes, "test data")
    cfg = TrainConfig(dataset=train_data.name, model=type(model).__qualname__, method=method, epochs=epochs,
                      method_cfg=method_cfg, **train_opts)
    cfg.validate(registered=False)
    check_method_options(method, options)  # k=0.3 with method="st": refused, naming st's options
    # the data's training eps (0.3 for grey digits, 8/255 for colour images) unless train_eps is given
    cfg = resolve_train(cfg, set(options), shape=tuple(train_data.x.shape[1:]))
    if resume and out is None:
        raise SgtlabError("resume=True continues the run in a folder: give out=FOLDER")
    arch = user_arch(model, tuple(train_data.x.shape[1:]), classes, train_data.name)
    torch.manual_seed(cfg.seed)  # the random parts of training (masks, attack starts); restored on resume
    return train_model(model, arch, train_data, test_data, cfg, out, resume=resume, progress=progress,
                       tensorboard=tensorboard)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               method: str = "st", *, idx: torch.Tensor | None = None, state: dict | None = None,
               epoch: int = 0, step: int = 0, total_steps: int = 0, check: bool = True,
               **options) -> dict[str, torch.Tensor]:
    """One optimisation step of a training method on a batch, for your own loop: the method's loss,
    `backward`, `optimizer.step()`. Returns the loss and its parts as detached scalar tensors (no host
    sync: call `.item()` when you want the numbers). The model is put in train mode.

    Methods that keep per-sample state (SCAAT) need `idx` (the batch's indices in the data set) and a
    `state` dict you keep between steps, created on the first call with `n_train` (the data set size)
    as an option. `options` are method options (`k`, `lam`, `train_eps`, ...). `check=False` skips the
    input checks (a min/max over the batch and a one-image forward for the number of classes).
    `step` (0-based, global) and `total_steps` (your run's length) drive the adversarial methods' eps
    warm-up (`eps_warmup`); with `total_steps` 0 (the default) the training attacks use the full budget."""
    from sgtlab.data.inputs import as_data, check_labels, output_classes
    from sgtlab.train import METHODS, MethodConfig, StepContext

    from sgtlab.data.budgets import budgets_for_shape
    from sgtlab.train.resolve import check_method_options, method_options

    check_model(model)
    m = METHODS.get(method)
    n_train = options.pop("n_train", None)
    names = sorted(f.name for f in dataclasses.fields(MethodConfig))
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise SgtlabError(f"unknown method option(s) {', '.join(unknown)}; choose from: {', '.join(names)}")
    MethodConfig(**options).validate()
    check_method_options(method, options)
    if "train_eps" not in options and "train_eps" in (method_options(method) or ()) and isinstance(x, torch.Tensor):
        options["train_eps"] = budgets_for_shape(tuple(x.shape[1:])).train_eps  # the images' kind: 0.3 or 8/255
    cfg = MethodConfig(**options).validate()
    if check:
        as_data((x, y), what="batch")
        check_labels(y, output_classes(model, x), "batch")
    if m.init_state is not None:
        if state is None or idx is None:
            raise SgtlabError(f"method {method!r} keeps per-sample state: pass idx=(the batch's data-set indices) "
                              f"and state=(a dict you keep between steps; the first call also needs n_train=N)")
        if not state:
            if n_train is None:
                raise SgtlabError(f"method {method!r}: the first step creates its state and needs n_train=N, "
                                  f"the data set size")
            state.update(m.init_state(int(n_train), cfg, x.device))
    if idx is None:
        idx = torch.arange(len(x), device=x.device)
    model.train()
    ctx = StepContext(idx=idx, epoch=epoch, step=step, state=state if state is not None else {}, module=model,
                      total_steps=total_steps)
    loss, parts = m.fn(model, x, y, cfg, ctx)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}
