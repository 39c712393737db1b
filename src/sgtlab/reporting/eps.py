"""eps as a reader writes it: `8/255` on colour data (whose budgets are whole 255ths, as
RobustBench gives them), a short decimal (`0.3`) on grey digits."""
from __future__ import annotations

import math
from typing import Any


def _in_255ths(values) -> bool:
    return all(abs(v * 255 - round(v * 255)) < 1e-6 for v in values)


def is_colour(dataset_or_shape: Any) -> bool:
    """Whether eps is given in 255ths for these data: a registered data set's kind of budgets
    (`sgtlab.data.budgets`: CIFAR-like for colour photographs), or an image shape's (C, H, W).
    False when nothing tells (tensors given in Python, an unknown name)."""
    from sgtlab.data.budgets import budgets, budgets_for_shape

    try:
        if isinstance(dataset_or_shape, (tuple, list)):
            b = budgets_for_shape(tuple(int(s) for s in dataset_or_shape))
        elif isinstance(dataset_or_shape, str) and dataset_or_shape:
            b = budgets(dataset_or_shape)
        else:
            return False
    except Exception:  # not a registered data set
        return False
    return _in_255ths(b.eps_grid)


def eps_text(eps: float, dataset_or_shape: Any = None) -> str:
    """`eps` for a table or a sentence: 'k/255' on colour data when eps is a whole number of 255ths
    (8/255 -> '8/255', also from its 6-digit text 0.0313725), else the value rounded to 4 decimals
    ('0.3', '0.05'); `dataset_or_shape` a data set's name (a row's `dataset`) or an image shape."""
    eps = float(eps)
    if eps == 0:
        return "0"
    if math.isfinite(eps) and is_colour(dataset_or_shape):
        k = eps * 255
        if abs(k - round(k)) < 1e-3 * max(1.0, abs(k)):
            return f"{round(k)}/255"
    return f"{round(eps, 4):g}"
