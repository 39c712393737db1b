"""ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
Methods"): remove the most (MoRF) or least (LeRF) salient pixels by *noisy linear imputation*
instead of noise, so the perturbed images stay near the data, and score the class probability.

Noisy linear imputation (as quantus 0.6.0's `noisy_linear_imputation`, after Rong et al.'s code):
each removed pixel equals the weighted mean of its in-image 8-neighbours (weight 1/6 for the 4
direct ones, 1/12 for the diagonals), all removed pixels solved jointly, plus Gaussian noise of
std `noise`. quantus solves one sparse system per image and fraction with `spsolve`; here all of
them are solved at once by preconditioned conjugate gradients on the image grid (the system,
negated, is a Dirichlet graph Laplacian: symmetric positive definite), each iteration one 3 x 3
stencil of the whole stack by shifted adds into buffers kept between iterations; converged images
leave the stack.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.device import eval_batch_size
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.perturb import check_classes, check_pair, evaluating, model_device, probs, ranks_of
from sgtlab.evaluate.saliency_metrics.faithfulness import drop_from_probs

ROAD_FRACTIONS = tuple(i / 10 for i in range(1, 10))


def _neighbours(t: torch.Tensor) -> torch.Tensor:
    """Weighted sum of each pixel's in-image 8-neighbours (1/6 direct, 1/12 diagonal), every channel
    of every image: the separable [1, 2, 1] x [1, 2, 1] / 12 sum minus the centre's 4/12, by shifted
    adds, in place where possible (a 3 x 3 one-channel convolution is 20x slower on a CPU)."""
    p = F.pad(t, (1, 1, 1, 1))
    rows = p[..., :-2, :] + p[..., 2:, :]
    rows.add_(p[..., 1:-1, :], alpha=2)
    both = rows[..., :-2] + rows[..., 2:]
    both.add_(rows[..., 1:-1], alpha=2).sub_(t, alpha=4)
    return both.mul_(1 / 12)


def _dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image dot products of two N x ... stacks as N x 1 x 1 x 1."""
    return torch.linalg.vecdot(a.view(len(a), -1), b.view(len(b), -1)).view(-1, 1, 1, 1)


class _Operator:
    """The system matrix (negated: symmetric positive definite) on the removed pixels,
    m * (s v - nb(v)) with nb(v) = (sep(v) - 4 v) / 12 and sep the separable [1 2 1]^2 sum, i.e.
    m * ((s + 1/3) v - sep(v) / 12), for a `v` that is zero outside the removed pixels (the start,
    the residual, every search direction): then (s + 1/3) v needs no mask. Written into buffers
    kept between iterations, in place: on a CPU a fresh allocation costs as much as the arithmetic."""

    def __init__(self, m: torch.Tensor, s: torch.Tensor):
        self.s3 = s + 1 / 3
        self.resize(m * (-1 / 12))

    def resize(self, neg_m: torch.Tensor) -> None:
        n, c, h, w = neg_m.shape
        self.neg_m = neg_m
        self.pad = neg_m.new_zeros(n, c, h + 2, w + 2)  # the border stays zero
        self.rows = neg_m.new_empty(n, c, h, w + 2)

    def __call__(self, v: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        pd, rows = self.pad, self.rows
        pd[..., 1:-1, 1:-1].copy_(v)
        torch.add(pd[..., :-2, :], pd[..., 2:, :], out=rows)
        rows.add_(pd[..., 1:-1, :], alpha=2)
        torch.add(rows[..., :-2], rows[..., 2:], out=out)
        return out.add_(rows[..., 1:-1], alpha=2).mul_(self.neg_m).addcmul_(self.s3, v)


def noisy_linear_imputation(x: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            generator: torch.Generator | None = None, tol: float = 3e-6,
                            max_iter: int = 1000, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`x` (N x C x H x W) with the pixels where `removed` (N x H x W bool, all channels) replaced by
    the solution of `v_i = sum_j w_ij u_j / sum_j w_ij` over i's in-image neighbours j (u_j = v_j if
    j is removed, x_j otherwise), plus `noise` x N(0, 1). Solved in `dtype`; each image leaves the
    iteration once all its residuals are below `tol` x the largest right-hand side (3e-6: at most
    1.5e-5 from the exact solution on 256 MNIST grad-map holes, as close as the earlier rule of
    1e-5 for the whole stack at once, which kept converged images iterating; a few hundredths of the
    default noise). float64 and 1e-9 give quantus's spsolve values to float32 rounding, at 2.5x the
    cost. An image with every pixel removed has no solution and is refused."""
    if removed.shape != (x.shape[0], *x.shape[2:]) or removed.dtype != torch.bool:
        raise SgtlabError(f"the removed-pixel mask must be a bool N x H x W tensor fitting {tuple(x.shape)}, "
                          f"got {removed.dtype} {tuple(removed.shape)}")
    if bool(removed.flatten(1).all(1).any()):
        raise SgtlabError("an image with every pixel removed cannot be imputed: use removal fractions below 1")
    xd = x.to(dtype)
    m = removed[:, None].to(dtype).expand_as(xd).contiguous()
    s = _neighbours(torch.ones_like(xd[:1, :1]))  # total in-image neighbour weight: 1 inside, less at the edge
    op = _Operator(m, s)
    b = m * _neighbours((1 - m) * xd)
    inv_s = 1 / s
    v = b * inv_s
    r = b - op(v, torch.empty_like(v))
    z = r * inv_s
    p = z.clone()
    ap = torch.empty_like(p)
    rz = _dots(r, z)
    limit = tol * b.abs().amax().clamp_min(1e-30)
    out = torch.empty_like(v)
    idx = torch.arange(len(x), device=x.device)  # the images still iterating
    it = -1  # max_iter = 0: no iteration, the preconditioned start is returned
    for it in range(max_iter):
        op(p, ap)
        # a zero direction (nothing removed) has p.Ap = 0 and r.z = 0: alpha = 0, beta = 0
        alpha = rz / _dots(p, ap).clamp_min_(1e-30)
        v.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1)
        if it % 4 == 3:  # one host sync every 4 iterations; converged images leave the stack
            done = r.view(len(r), -1).abs().amax(1) <= limit
            n_done = int(done.sum())
            if n_done == len(done):
                break
            if n_done * 8 >= len(done):  # copying the stack pays off once an eighth is done
                out[idx[done]] = v[done]
                keep = ~done
                idx, v, r, p, rz = idx[keep], v[keep], r[keep], p[keep], rz[keep]
                z, ap = torch.empty_like(p), torch.empty_like(p)
                op.resize(op.neg_m[keep])
        torch.mul(r, inv_s, out=z)
        rz_new = _dots(r, z)
        p, z = z.addcmul_(rz_new / rz.clamp_min(1e-30), p), p  # z's buffer becomes p; p's the next z
        rz = rz_new
    out[idx] = v
    noisy_linear_imputation.last_iterations = it + 1  # for the benchmark's record
    if noise:
        out = out + noise * torch.randn(x.shape, generator=generator, dtype=dtype, device="cpu").to(x.device)
    return torch.where(removed[:, None], out.to(x.dtype), x)


def removal_masks(maps: torch.Tensor, fractions: Sequence[float], order: str) -> torch.Tensor:
    """N x P x H x W bool: per image the `int(f * H * W)` most (`morf`) or least (`lerf`) salient
    pixels by `|s|`, for each fraction f (ties keep index order)."""
    n, h, w = maps.shape
    ranks = ranks_of(maps.abs().flatten(1), descending=(order == "morf"))
    ks = torch.tensor([int(f * h * w) for f in fractions], device=maps.device)
    return (ranks[:, None, :] < ks[None, :, None]).view(n, len(fractions), h, w)


def road(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor, *, order: str = "morf",
         fractions: Sequence[float] = ROAD_FRACTIONS, noise: float = 0.01, generator: torch.Generator | None = None,
         batch_size: int | None = None) -> dict[str, Any]:
    """ROAD for maps `maps` explaining `classes` (N): at each removal fraction, the softmax
    probability of that class and whether it is still predicted, after removing the `fraction` most
    (`morf`) or least (`lerf`) salient pixels by noisy linear imputation. Every image and fraction
    is imputed and scored in one batch (no loop over images).

    Returns `fractions`, `prob` (N x P), `correct` (N x P bool: the prediction is the scored
    class), `clean` (N: the clean probability), `drop` (N: mean over fractions of clean - prob;
    MoRF high and LeRF low is faithful), `accuracy` (P)."""
    check_pair(x, maps)
    classes = check_classes(classes, len(x))
    if order not in ("morf", "lerf"):
        raise SgtlabError(f"ROAD order must be 'morf' or 'lerf', got {order!r}")
    fractions = [float(f) for f in fractions]
    if not fractions or any(not 0 <= f < 1 for f in fractions):
        raise SgtlabError(f"ROAD removal fractions must be in [0, 1), got {fractions}")
    if not noise >= 0:
        raise SgtlabError(f"the imputation noise must be >= 0, got {noise}")
    batch_size = eval_batch_size(batch_size, model_device(model))
    n, c, h, w = x.shape
    masks = removal_masks(maps.to(x.device), fractions, order)  # N x P x H x W
    # one solve per fraction (all images at once): small holes then stop early instead of iterating
    # as long as the largest ones; N x P x C x H x W, image-major as the scoring below expects
    imputed = torch.stack([torch.cat([noisy_linear_imputation(x[i:i + 4096], masks[i:i + 4096, j], noise, generator)
                                      for i in range(0, n, 4096)]) for j in range(len(fractions))], 1).flatten(0, 1)
    with evaluating(model):
        p = probs(model, imputed, batch_size).view(n, len(fractions), -1).cpu()
        clean = probs(model, x, batch_size).cpu()
    cls = classes.cpu()
    prob = p.gather(2, cls[:, None, None].expand(-1, len(fractions), 1))[..., 0]
    correct = p.argmax(2) == cls[:, None]
    clean_c = clean.gather(1, cls[:, None])[:, 0]
    return {"fractions": fractions, "prob": prob, "correct": correct, "clean": clean_c,
            "drop": drop_from_probs(clean_c, prob), "accuracy": correct.float().mean(0).tolist()}
