"""Attack budgets per data set: the standard eps grid, the training eps, the low-saliency-curve eps
and the headline eps (the values papers and RobustBench report), all L-inf in pixel units.

A declarative table keyed by data-set name. A data set not in the table gets the budgets of its
kind, decided by its registered image shape: one channel and at most 32 px (MNIST-like digits,
where eps 0.3 is the usual budget) -> the MNIST budgets; anything else (colour photographs) -> the
CIFAR-10 budgets (8/255). So a new data set works out of the box, and adding it to `BUDGETS` is
one line when its papers use other values.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budgets:
    eps_grid: tuple[float, ...]   # the attack sweep's grid
    train_eps: float              # adversarial training's budget
    low_saliency_eps: float       # budget of the low-saliency robustness curve
    headline_eps: tuple[float, ...]  # the standard budgets a report headlines (ascending)
    kind: str                     # where the values come from, said in reports


MNIST_LIKE = Budgets(eps_grid=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4), train_eps=0.3, low_saliency_eps=0.3,
                     headline_eps=(0.1, 0.3), kind="MNIST budgets (Madry et al.; RobustBench-style 0.1/0.3)")
CIFAR_LIKE = Budgets(eps_grid=(1 / 255, 2 / 255, 4 / 255, 6 / 255, 8 / 255, 10 / 255, 12 / 255, 16 / 255),
                     train_eps=8 / 255, low_saliency_eps=8 / 255, headline_eps=(2 / 255, 8 / 255),
                     kind="CIFAR-10 budgets (RobustBench: 8/255; also 2/255)")

BUDGETS: dict[str, Budgets] = {
    "mnist": MNIST_LIKE,
    "mnist5k": MNIST_LIKE,
    "fashion-mnist": Budgets(MNIST_LIKE.eps_grid, 0.1, 0.1, (0.1, 0.2),
                             "Fashion-MNIST budgets (0.1 is the usual training eps)"),
    "decoy-mnist": MNIST_LIKE,
    "decoy-mnist5k": MNIST_LIKE,
    "cifar10": CIFAR_LIKE,
    "cifar100": CIFAR_LIKE,
}


def budgets_for_shape(shape: tuple[int, ...]) -> Budgets:
    """The fallback: MNIST budgets for small grey images, CIFAR budgets otherwise."""
    channels, height = shape[0], shape[1] if len(shape) > 1 else 0
    return MNIST_LIKE if channels == 1 and height <= 32 else CIFAR_LIKE


def budgets(dataset: str) -> Budgets:
    """The budgets of a registered data set (by name; else by its image shape, see the module doc)."""
    if dataset in BUDGETS:
        return BUDGETS[dataset]
    from sgtlab.data.base import dataset_info

    return budgets_for_shape(dataset_info(dataset).shape)


def budgets_for(dataset: str | None = None, shape: tuple[int, ...] | None = None) -> Budgets:
    """The one budget resolver every entry point uses (`fit`, `train_step`, `robustness`,
    `saliency_maps`, `saliency_metrics`, `benchmark`, the commands): the budgets of `dataset` when
    the table names it, else those of the images' kind, by `shape` (C, H, W) or the registered
    data set's shape: 0.3 for small grey digits, 8/255 for colour images."""
    if dataset and dataset in BUDGETS:
        return BUDGETS[dataset]
    if shape is not None:  # any other data set's budgets are those of its kind (see `budgets`)
        return budgets_for_shape(tuple(int(s) for s in shape))
    if not dataset:
        raise ValueError("budgets_for needs a data set name or an image shape")
    return budgets(dataset)


def check_unit_eps(name: str, value) -> None:
    """eps in pixel units must lie in [0, 1]: `8` for 8/255 is refused with one line."""
    from sgtlab.errors import SgtlabError

    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            hint = f" (pixel units: {v:g}/255 is {v / 255:.6g})" if isinstance(v, (int, float)) and v > 1 else ""
            raise SgtlabError(f"{name} must be a number in [0, 1], got {v!r}{hint}")
