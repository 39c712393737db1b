"""Similarity of two sets of maps, per image, for the sanity checks (Adebayo et al. 2018): the
Spearman rank correlation of `|maps|` and the SSIM of the maps scaled to [0, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sgtlab.errors import SgtlabError


def rank_average(v: torch.Tensor) -> torch.Tensor:
    """Ranks (1..n) along the last dimension, tied values sharing their average rank (as
    `scipy.stats.rankdata`): all rows at once by a sort and two `searchsorted`."""
    s = v.sort(-1).values.contiguous()
    v = v.contiguous()
    left = torch.searchsorted(s, v, right=False)
    right = torch.searchsorted(s, v, right=True)
    return (left + right + 1).double() / 2


def _pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape or a.ndim != 3:
        raise SgtlabError(f"two sets of N x H x W maps of one shape are needed, got "
                          f"{getattr(a, 'shape', a)} and {getattr(b, 'shape', b)}")


def spearman_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of `|a|` and `|b|` per image (N); NaN where a map is constant."""
    _pair(a, b)
    ra, rb = rank_average(a.abs().flatten(1)), rank_average(b.abs().flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))).float()


def ssim(a: torch.Tensor, b: torch.Tensor, win: int = 7) -> torch.Tensor:
    """SSIM per image of `|a|` and `|b|`, each scaled by its own maximum into [0, 1]: a `win` x `win`
    uniform window, K1 = 0.01, K2 = 0.03, sample covariances, the mean over windows that lie inside
    the image (as `skimage.metrics.structural_similarity` with `data_range=1`)."""
    _pair(a, b)
    if min(a.shape[1:]) < win:
        raise SgtlabError(f"SSIM needs maps of at least {win} x {win} pixels, got {tuple(a.shape[1:])}")

    def scaled(m):
        m = m.abs().double()[:, None]
        return m / m.amax((2, 3), keepdim=True).clamp_min(1e-300)

    x, y = scaled(a), scaled(b)
    pool = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    ux, uy = pool(x), pool(y)
    cov = win * win / (win * win - 1)
    vx, vy, vxy = cov * (pool(x * x) - ux * ux), cov * (pool(y * y) - uy * uy), cov * (pool(x * y) - ux * uy)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean((1, 2, 3)).float()
