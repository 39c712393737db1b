"""Faithfulness formulas: what AOPC, ABPC and ROAD make of the class probabilities of perturbed
images (the model calls that produce them are in `sgtlab.evaluate.perturbation_metrics` and
`sgtlab.evaluate.road`)."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats as _st


def aopc_from_probs(prob: torch.Tensor) -> torch.Tensor:
    """AOPC (Samek et al. 2017) per image from `prob` (N x L+1, `prob[:, k]` = f_c(x_k), k = 0 the
    clean image): `mean_{k=0..L} (f_c(x) - f_c(x_k))`."""
    return (prob[:, :1] - prob).mean(1)


def drop_from_probs(clean: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    """ROAD's score per image: the mean over removal fractions of `f_c(x) - f_c(x_p)` (`clean`: N,
    `prob`: N x P). The same reading as AOPC: MoRF high and LeRF low is faithful."""
    return (clean[:, None] - prob).mean(1)


def abpc(morf: torch.Tensor, lerf: torch.Tensor) -> torch.Tensor:
    """ABPC = MoRF - LeRF per image (higher is more faithful; 0 for a map that ranks at random)."""
    return morf - lerf


def clearly_positive(values, conf: float = 0.95) -> tuple[bool, float, float]:
    """(lower bound > 0, lo, hi) of the t interval of the mean of `values` (NaNs dropped)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return False, math.nan, math.nan
    m, se = v.mean(), v.std(ddof=1) / math.sqrt(len(v))
    if se == 0:
        return bool(m > 0), float(m), float(m)
    h = se * _st.t.ppf(0.5 + conf / 2, len(v) - 1)
    return bool(m - h > 0), float(m - h), float(m + h)


def ratio_where_defined(morf, lerf, conf: float = 0.95) -> float:
    """`mean(MoRF) / mean(LeRF)` only where LeRF is clearly above 0 (the lower end of its `conf` t
    interval over images is > 0); NaN ("undefined") otherwise: a ratio of two means near 0 is
    noise (the quick report once showed -2240 ± 9321)."""
    ok, _, _ = clearly_positive(lerf, conf)
    if not ok:
        return math.nan
    return float(np.nanmean(np.asarray(morf, dtype=float)) / np.nanmean(np.asarray(lerf, dtype=float)))
