"""The perturbation engine (`sgtlab.evaluate.perturb`), the perturbation metrics, ROAD's imputation
and the sanity checks, each against an independent reference on tiny hand-built models and
tensors: a per-image (and per-step) loop, a dense linear solve, `scipy.stats.t`."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as st
from torch import nn

from sgtlab.errors import SgtlabError
from sgtlab.evaluate import perturb as pt
from sgtlab.evaluate.perturbation_metrics import (aopc, low_saliency_curve, low_saliency_masks, masked_accuracy,
                                                  uniform_fill_like)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def linear_net(c=1, h=5, w=5, k=3, scale=4.0, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k))
    with torch.no_grad():
        model[1].weight.mul_(scale)
    return model.eval()


def softmax_of(model, x):
    with torch.no_grad():
        return F.softmax(model(x), 1)


def order_of(scores, descending):
    """Indices by score, ties in index order (Python's sort is stable)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i] if descending else scores[i])


# -- the engine ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("descending", [True, False])
def test_ranks_are_positions_in_a_stable_sort(descending):
    scores = torch.tensor([[0.5, 0.1, 0.5, 0.9, 0.1, 0.3], [1.0, 1.0, 1.0, 0.0, 2.0, 0.0]])
    many_ties = torch.randint(0, 3, (2, 300), generator=gen(40)).float()  # long rows: torch's unstable sort differs
    for scores in (scores, many_ties):
        ranks = pt.ranks_of(scores, descending=descending)
        for row, r in zip(scores.tolist(), ranks.tolist()):
            expect = [0] * len(row)
            for pos, i in enumerate(order_of(row, descending)):
                expect[i] = pos
            assert r == expect


def test_perturbed_replaces_the_units_ranked_below_each_k():
    g = gen(0)
    x, fill = torch.rand(2, 2, 3, 4, generator=g), torch.rand(2, 2, 3, 4, generator=g)
    ranks = torch.stack([torch.randperm(12, generator=g) for _ in range(2)])
    ks = torch.tensor([0, 1, 5, 12])
    out = pt.perturbed(x, fill, ranks, ks)
    assert out.shape == (2, 4, 2, 3, 4)
    for i in range(2):
        for j, k in enumerate(ks.tolist()):
            for p in range(12):
                src = fill if ranks[i, p] < k else x
                assert torch.equal(out[i, j, :, p // 4, p % 4], src[i, :, p // 4, p % 4])


@pytest.mark.parametrize("batch_size", [1, 3, 7, 50])
def test_probs_in_chunks_are_the_softmax_of_each_image(batch_size):
    model = linear_net()
    for p in model.parameters():
        p.requires_grad_(True)
    x = torch.rand(7, 1, 5, 5, generator=gen(1))
    out = pt.probs(model, x, batch_size)
    assert out.shape == (7, 3) and not out.requires_grad  # no graph is kept for a large stack
    for i in range(7):
        with torch.no_grad():
            ref = F.softmax(model[1](x[i].flatten()), 0)
        torch.testing.assert_close(out[i], ref)


def test_chunk_and_default_patch():
    assert [pt.chunk(n, 12) for n in (0, 1, 3, 5, 12, 13)] == [12, 12, 4, 2, 1, 1]
    assert pt.chunk(4, 2) == 1
    assert [pt.default_patch(h) for h in (12, 28, 31, 32, 64)] == [2, 2, 2, 4, 4]


def test_patch_scores_sum_abs_per_patch_with_smaller_edge_patches():
    maps = torch.randn(2, 7, 5, generator=gen(2))
    scores, pix = pt.patch_scores(maps, 3)
    gw = 2  # ceil(5 / 3)
    assert scores.shape == (2, 3 * gw) and pix.shape == (35,)
    for r in range(7):
        for c in range(5):
            assert pix[r * 5 + c].item() == (r // 3) * gw + c // 3
    for i in range(2):
        for pr in range(3):
            for pc in range(gw):
                ref = maps[i, 3 * pr:3 * pr + 3, 3 * pc:3 * pc + 3].abs().sum()
                torch.testing.assert_close(scores[i, pr * gw + pc], ref)


def test_explained_class_is_the_label_or_the_clean_prediction():
    model = linear_net()
    x, y = torch.rand(5, 1, 5, 5, generator=gen(3)), torch.tensor([2, 2, 0, 1, 0])
    assert pt.explained_class(model, x, y, "true", 2) is y
    assert pt.explained_class(model, x, y, "pred", 2).tolist() == softmax_of(model, x).argmax(1).tolist()
    with pytest.raises(SgtlabError, match="'true'"):
        pt.explained_class(model, x, y, "label", 2)


def test_input_checks():
    assert pt.check_fractions([0, 0.5, 1], "q") == [0.0, 0.5, 1.0]
    assert pt.check_fractions([0, 100], "p", 100) == [0.0, 100.0]
    for bad, hi in (([], 1.0), ([-0.01], 1.0), ([1.01], 1.0), ([0.5, 100.5], 100)):
        with pytest.raises(SgtlabError, match="non-empty list"):
            pt.check_fractions(bad, "q", hi)
    cls = pt.check_classes(torch.tensor([1, 0, 2], dtype=torch.int32), 3)
    assert cls.dtype == torch.long and cls.tolist() == [1, 0, 2]
    for bad in ([1, 0, 2], torch.tensor([1.0, 0.0, 2.0]), torch.tensor([1, 0]), torch.tensor([[1, 0, 2]])):
        with pytest.raises(SgtlabError, match="integer tensor of shape"):
            pt.check_classes(bad, 3)
    pt.check_target("true")
    pt.check_target("pred")
    pt.check_pair(torch.rand(2, 3, 4, 5), torch.rand(2, 4, 5))
    with pytest.raises(SgtlabError, match="N x C x H x W"):
        pt.check_pair(torch.rand(2, 4, 5), torch.rand(2, 4, 5))
    with pytest.raises(SgtlabError, match="do not fit"):
        pt.check_pair(torch.rand(2, 3, 4, 5), torch.rand(2, 5, 4))


# -- AOPC, masked accuracy, the low-saliency curve ------------------------------------------------------

def aopc_loop(model, x, maps, patch, steps, order, fill, classes=None):
    """AOPC per image from its definition: patches by summed |s| (ties in index order), replaced
    one per step; the mean over k = 0..steps of p_c(x) - p_c(x_k)."""
    n, _, h, w = x.shape
    out, probs_c = [], []
    for i in range(n):
        cells = [(r, c) for r in range(0, h, patch) for c in range(0, w, patch)]
        scores = [maps[i, r:r + patch, c:c + patch].abs().sum().item() for r, c in cells]
        ranked = [cells[j] for j in order_of(scores, order == "morf")]
        p0 = softmax_of(model, x[i:i + 1])[0]
        cls = int(p0.argmax()) if classes is None else int(classes[i])
        xk, ps = x[i].clone(), [p0[cls].item()]
        for r, c in ranked[:steps]:
            xk[:, r:r + patch, c:c + patch] = fill[i, :, r:r + patch, c:c + patch]
            ps.append(softmax_of(model, xk[None])[0, cls].item())
        probs_c.append(ps)
        out.append(np.mean([ps[0] - p for p in ps]))
    return torch.tensor(out), torch.tensor(probs_c)


def conv_net(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 7 * 6, 4)).eval()
    with torch.no_grad():
        model[3].weight.mul_(20)
    return model


@pytest.mark.parametrize("local", [True, False])
def test_aopc_lerf_with_given_classes_matches_the_loop(local):
    model = conv_net()
    g = gen(5)
    x, fill = torch.rand(5, 2, 7, 6, generator=g), torch.rand(5, 2, 7, 6, generator=g)
    maps = torch.randn(5, 7, 6, generator=g)
    maps[0] = 1.0  # all patches tie: index order
    classes = torch.tensor([3, 0, 1, 2, 3])
    for order in ("lerf", "morf"):
        res = aopc(model, x, maps, classes=classes, order=order, patch=2, steps=5, fill=fill, batch_size=2,
                   local=local)
        ref, ref_prob = aopc_loop(model, x, maps, 2, 5, order, fill, classes)
        torch.testing.assert_close(res["aopc"], ref.float(), atol=1e-5, rtol=0)
        torch.testing.assert_close(res["prob"], ref_prob.float(), atol=1e-5, rtol=0)
        assert res["cls"].tolist() == classes.tolist()
        assert res["pred"].tolist() == softmax_of(model, x).argmax(1).tolist()


def test_aopc_defaults_patch_steps_and_fill_from_the_generator():
    model = linear_net(h=28, w=28, k=3, scale=30.0)
    x = torch.rand(2, 1, 28, 28, generator=gen(6))
    maps = torch.rand(2, 28, 28, generator=gen(7))
    res = aopc(model, x, maps, generator=gen(8))
    assert res["prob"].shape == (2, 1 + 14 * 14 // 2)  # 2 px patches below 32 px, half of them
    same = aopc(model, x, maps, fill=torch.rand(x.shape, generator=gen(8)))
    torch.testing.assert_close(res["prob"], same["prob"])
    ref, _ = aopc_loop(model, x, maps, 2, 98, "morf", torch.rand(x.shape, generator=gen(8)))
    torch.testing.assert_close(res["aopc"], ref.float(), atol=1e-5, rtol=0)
    big = linear_net(h=32, w=32, k=3)
    x32 = torch.rand(1, 1, 32, 32)
    assert aopc(big, x32, torch.rand(1, 32, 32))["prob"].shape == (1, 1 + 8 * 8 // 2)  # 4 px patches
    assert aopc(big, x32, torch.rand(1, 32, 32), steps=64)["prob"].shape == (1, 65)  # every patch
    assert aopc(big, x32, torch.rand(1, 32, 32), steps=1)["prob"].shape == (1, 2)
    for bad in (dict(steps=0), dict(steps=65), dict(order="random"), dict(fill=torch.rand(1, 1, 32, 31))):
        with pytest.raises(SgtlabError):
            aopc(big, x32, torch.rand(1, 32, 32), **bad)


def test_uniform_fill_is_in_each_channels_own_range():
    x = torch.rand(3, 2, 4, 5, generator=gen(9)) * torch.tensor([1.0, 0.2]).view(1, 2, 1, 1) + 0.3
    fill = uniform_fill_like(x, gen(10))
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    u = torch.rand(x.shape, generator=gen(10))
    torch.testing.assert_close(fill, lo + (hi - lo) * u)
    assert bool(((fill >= lo) & (fill <= hi)).all())


def test_masked_accuracy_matches_a_per_image_loop():
    n, h, w = 6, 5, 5
    model = linear_net(h=h, w=w, k=3, scale=8.0, seed=1)
    x = torch.rand(n, 1, h, w, generator=gen(11))
    y = softmax_of(model, x).argmax(1)
    y[0] = (y[0] + 1) % 3  # a misclassified image
    maps = torch.randn(n, h, w, generator=gen(12))
    ps = [0, 10, 30, 50, 100]
    res = masked_accuracy(model, x, y, maps, ps=ps, generator=gen(13), batch_size=4)
    g = gen(13)
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    fill = lo + (hi - lo) * torch.rand(x.shape, generator=g)
    rand_scores = torch.rand((n, h * w), generator=g)
    assert res["p"] == [float(p) for p in ps]
    for name, scores in (("top", maps.abs().flatten(1)), ("random", rand_scores)):
        correct = torch.zeros(n, len(ps), dtype=torch.bool)
        for i in range(n):
            order = order_of(scores[i].tolist(), True)
            for j, p in enumerate(ps):
                xi = x[i].clone().view(1, -1)
                idx = order[:round(p / 100 * h * w)]  # 10 % of 25 = 2.5: 2 pixels
                xi[:, idx] = fill[i].view(1, -1)[:, idx]
                correct[i, j] = softmax_of(model, xi.view(1, 1, h, w))[0].argmax() == y[i]
        assert torch.equal(res[f"{name}_correct"], correct), name
        assert res[name] == pytest.approx(correct.float().mean(0).tolist())


def test_low_saliency_masks_are_the_least_salient_round_q_hw():
    maps = torch.randn(2, 5, 5, generator=gen(14))
    qs = [0, 0.3, 0.5, 1]  # 0.3 * 25 = 7.5 rounds to 8, 0.5 * 25 = 12.5 to 12
    masks = low_saliency_masks(maps, qs)
    assert masks.shape == (2, 4, 5, 5)
    for i in range(2):
        order = order_of(maps[i].abs().flatten().tolist(), False)
        for j, k in enumerate([0, 8, 12, 25]):
            ref = torch.zeros(25, dtype=torch.bool)
            ref[order[:k]] = True
            assert torch.equal(masks[i, j].flatten(), ref)


class Margin(nn.Module):
    """Two classes by the mean of all pixels: class 1 iff mean(x) > 0.5."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(40.0))

    def forward(self, x):
        z = self.w * (x.flatten(1).mean(1) - 0.5)
        return torch.stack([-z, z], 1)


def test_low_saliency_curve_noise_and_pgd_against_the_margins():
    """Noise on the q least-salient pixels, from the same uniform draws (clipped to [0, 1]), by a
    loop; PGD with budget 0.1 on every pixel (q = 1) flips exactly the images whose mean is within
    0.1 of the boundary; q = 0 is the clean accuracy; `pgd_n` keeps the first images only."""
    n, h, w = 8, 4, 4
    means = torch.tensor([0.9, 0.55, 0.85, 0.56, 0.45, 0.95, 0.2, 0.58])
    x = means.view(n, 1, 1, 1).expand(n, 1, h, w).clone()
    y = torch.tensor([1, 1, 1, 1, 1, 0, 0, 1])  # image 4 and 5 misclassified
    maps = torch.rand(n, h, w, generator=gen(15))
    model = Margin()
    qs, eps = [0, 0.25, 0.5, 1.0], 0.1
    res = low_saliency_curve(model, x, y, maps, qs=qs, eps=eps, pgd_qs=[0, 1.0], pgd_steps=10, pgd_n=6,
                             generator=gen(16), batch_size=3)
    noise = (torch.rand(x.shape, generator=gen(16)) * 2 - 1) * eps
    masks = low_saliency_masks(maps, qs)
    ref = []
    for j in range(len(qs)):
        xs = (x + noise * masks[:, j, None]).clamp(0, 1)
        ref.append((softmax_of(model, xs).argmax(1) == y).float().mean().item())
    assert res["noise"] == pytest.approx(ref)
    assert res["q"] == qs and res["eps"] == eps
    # first 6 images: correct and more than 0.1 from the boundary are images 0 and 2
    assert res["pgd_q"] == [0, 1.0] and res["pgd_n"] == 6 and res["pgd_steps"] == 10
    assert res["pgd"] == pytest.approx([4 / 6, 2 / 6])
    full = low_saliency_curve(model, x, y, maps, qs=[0, 1.0], eps=eps, pgd_steps=10, generator=gen(16))
    assert full["pgd_n"] == 8 and full["pgd"] == pytest.approx([6 / 8, 3 / 8])
    assert low_saliency_curve(model, x, y, maps, qs=[1.0], eps=eps, pgd_steps=10)["pgd"] == pytest.approx([3 / 8])
    assert "pgd" not in low_saliency_curve(model, x, y, maps, qs=[0.5], eps=eps, pgd=False)
    for bad in (dict(eps=-0.1), dict(pgd_n=0), dict(pgd_qs=[2.0])):
        with pytest.raises(SgtlabError):
            low_saliency_curve(model, x, y, maps, qs=[0.5], **bad)


# -- ROAD: noisy linear imputation ---------------------------------------------------------------------

from sgtlab.evaluate.road import _neighbours, noisy_linear_imputation, removal_masks, road  # noqa: E402

NEIGHBOURS = [(dr, dc, 1 / 6 if dr == 0 or dc == 0 else 1 / 12) for dr in (-1, 0, 1) for dc in (-1, 0, 1)
              if (dr, dc) != (0, 0)]


def imputed_by_dense_solve(x, removed):
    """Each removed pixel = the weighted mean of its in-image 8-neighbours (1/6 direct, 1/12
    diagonal; removed neighbours are unknowns too): one dense linear system per image and channel."""
    out = x.double().clone()
    n, c, h, w = x.shape
    for i in range(n):
        pix = [(r, q) for r in range(h) for q in range(w) if removed[i, r, q]]
        at = {p: j for j, p in enumerate(pix)}
        for ch in range(c):
            a, b = np.zeros((len(pix), len(pix))), np.zeros(len(pix))
            for j, (r, q) in enumerate(pix):
                for dr, dc, wt in NEIGHBOURS:
                    rr, qq = r + dr, q + dc
                    if 0 <= rr < h and 0 <= qq < w:
                        a[j, j] += wt
                        if (rr, qq) in at:
                            a[j, at[rr, qq]] -= wt
                        else:
                            b[j] += wt * x[i, ch, rr, qq].item()
            if pix:
                v = np.linalg.solve(a, b)
                for j, (r, q) in enumerate(pix):
                    out[i, ch, r, q] = v[j]
    return out


def test_neighbours_is_the_weighted_stencil_inside_the_image():
    t = torch.rand(2, 3, 4, 5, generator=gen(20), dtype=torch.float64)
    kernel = torch.zeros(3, 3, dtype=torch.float64)
    for dr, dc, wt in NEIGHBOURS:
        kernel[1 + dr, 1 + dc] = wt
    ref = F.conv2d(t.view(6, 1, 4, 5), kernel[None, None], padding=1).view(2, 3, 4, 5)
    torch.testing.assert_close(_neighbours(t), ref)


def test_imputation_solves_the_neighbour_system_per_image():
    """16 images of different hole sizes (a single pixel to most of the image, one with nothing
    removed), so that converged images leave the iteration early; 2 channels."""
    g = gen(21)
    x = torch.rand(16, 2, 6, 7, generator=g)
    maps = torch.rand(16, 6, 7, generator=g)
    fracs = torch.linspace(0, 0.95, 16)
    removed = torch.stack([removal_masks(maps[i:i + 1], [float(f)], "morf")[0, 0] for i, f in enumerate(fracs)])
    removed[1] = False
    removed[1, 0, 0] = True  # a corner pixel: its neighbour weights sum to 1/6 + 1/6 + 1/12
    assert not removed[0].any() and removed[15].sum() == int(0.95 * 42)
    ref = imputed_by_dense_solve(x, removed)
    exact = noisy_linear_imputation(x, removed, noise=0.0, tol=1e-12, dtype=torch.float64)
    torch.testing.assert_close(exact, ref.float(), atol=1e-6, rtol=0)
    fast = noisy_linear_imputation(x, removed, noise=0.0)  # float32, tol 3e-6
    assert (fast - ref).abs().max() < 2e-5
    kept = ~removed[:, None].expand_as(x)
    assert fast.dtype == x.dtype and torch.equal(fast[kept], x[kept])
    assert noisy_linear_imputation.last_iterations < 1000
    # few iterations are not enough: the tolerance is what stops it
    assert (noisy_linear_imputation(x, removed, noise=0.0, max_iter=2) - ref).abs().max() > 1e-3


def test_imputation_noise_is_added_on_the_removed_pixels_only():
    x = torch.rand(3, 2, 5, 5, generator=gen(22))
    removed = torch.rand(3, 5, 5, generator=gen(23)) < 0.4
    clean = noisy_linear_imputation(x, removed, noise=0.0)
    noisy = noisy_linear_imputation(x, removed, noise=0.1, generator=gen(24))
    expect = torch.where(removed[:, None], clean + 0.1 * torch.randn(x.shape, generator=gen(24)), x)
    torch.testing.assert_close(noisy, expect)
    torch.testing.assert_close(noisy_linear_imputation(x, removed), torch.where(
        removed[:, None], clean + 0.01 * torch.randn(x.shape, generator=gen(25)), x), atol=0.05, rtol=0)
    for bad in (removed.float(), removed[:2], torch.ones(3, 5, 5, dtype=torch.bool)):
        with pytest.raises(SgtlabError):
            noisy_linear_imputation(x, bad)


def neighbour_system(x, removed, i):
    """Image i's system A v = b over its removed pixels of every channel (ordered channel, row,
    column, as `t[i][removed[i] expanded]`): A_jj = the in-image neighbour weight, A_jk = -w_jk for a
    removed neighbour k, b_j = the weighted sum of the kept neighbours (float64, dense)."""
    _, c, h, w = x.shape
    pix = [(ch, r, q) for ch in range(c) for r in range(h) for q in range(w) if removed[i, r, q]]
    at = {p: j for j, p in enumerate(pix)}
    a, b = np.zeros((len(pix), len(pix))), np.zeros(len(pix))
    for j, (ch, r, q) in enumerate(pix):
        for dr, dc, wt in NEIGHBOURS:
            rr, qq = r + dr, q + dc
            if 0 <= rr < h and 0 <= qq < w:
                a[j, j] += wt
                if (ch, rr, qq) in at:
                    a[j, at[ch, rr, qq]] -= wt
                else:
                    b[j] += wt * float(x[i, ch, rr, qq])
    return a, b


def jacobi_pcg(a, b, iters):
    """Textbook conjugate gradients preconditioned by the diagonal, from the Jacobi start D^-1 b:
    the iterates v_0..v_iters and the largest |residual| of each (float64, dense)."""
    d = np.diag(a)
    v = b / d
    r = b - a @ v
    z = r / d
    p, rz = z.copy(), r @ z
    vs, res = [v.copy()], [np.abs(r).max()]
    for _ in range(iters):
        ap = a @ p
        alpha = rz / (p @ ap)
        v, r = v + alpha * p, r - alpha * ap
        vs.append(v.copy())
        res.append(np.abs(r).max())
        z = r / d
        rz, rz_old = r @ z, rz
        p = z + rz / rz_old * p
    return vs, res


def test_imputation_iterates_are_jacobi_preconditioned_conjugate_gradients():
    """The solver is CG on the neighbour system preconditioned by its diagonal (the in-image
    neighbour weight, below 1 at the edge), from the Jacobi start; `max_iter` counts iterations, and
    the residual is checked every 4 iterations against `tol` x the largest right-hand side."""
    g = gen(70)
    x = torch.rand(1, 2, 6, 7, generator=g, dtype=torch.float64)
    removed = torch.rand(1, 6, 7, generator=g) < 0.6
    assert removed[0, 0].any() and removed[0, :, 0].any()  # edge pixels: the preconditioner is not 1
    a, b = neighbour_system(x, removed, 0)
    vs, res = jacobi_pcg(a, b, 60)
    hole = removed[:, None].expand_as(x)
    for k in range(4):  # no convergence check before the 4th iteration
        out = noisy_linear_imputation(x, removed, noise=0.0, max_iter=k, dtype=torch.float64)
        assert noisy_linear_imputation.last_iterations == k
        np.testing.assert_allclose(out[hole].numpy(), vs[k], rtol=0, atol=1e-12)
        assert torch.equal(out[~hole], x[~hole])
    limit = 1e-7 * np.abs(b).max()
    stop = next(k for k in range(4, 61, 4) if res[k] <= limit)
    assert stop >= 12 and all(res[k] > 2 * limit for k in range(4, stop, 4)) and res[stop] < limit / 2  # not borderline
    out = noisy_linear_imputation(x, removed, noise=0.0, tol=1e-7, dtype=torch.float64)
    assert noisy_linear_imputation.last_iterations == stop
    np.testing.assert_allclose(out[hole].numpy(), vs[stop], rtol=0, atol=1e-12)


def test_imputation_stopping_rule_edges():
    g = gen(71)
    x = torch.rand(2, 1, 6, 6, generator=g)
    nothing = torch.zeros(2, 6, 6, dtype=torch.bool)
    # nothing to solve: the residual is exactly 0 <= 0 at the first check, even at tol 0
    assert torch.equal(noisy_linear_imputation(x, nothing, noise=0.0, tol=0.0), x)
    assert noisy_linear_imputation.last_iterations == 4
    # a tolerance never met runs max_iter iterations, 1000 by default
    removed = torch.rand(2, 6, 6, generator=g) < 0.5
    noisy_linear_imputation(x, removed, noise=0.0, tol=-1.0)
    assert noisy_linear_imputation.last_iterations == 1000
    noisy_linear_imputation(x, removed, noise=0.0, tol=-1.0, max_iter=7)
    assert noisy_linear_imputation.last_iterations == 7
    # one image with every pixel removed is refused even when the others are not
    full = removed.clone()
    full[1] = True
    with pytest.raises(SgtlabError):
        noisy_linear_imputation(x, full)


def test_imputation_is_scale_equivariant():
    """The tolerance is relative to the largest right-hand side: imputing 2^k x is 2^k times the
    imputation of x, after the same iterations (a power of 2 scales every float exactly)."""
    g = gen(72)
    x = torch.rand(3, 1, 7, 6, generator=g)
    removed = torch.rand(3, 7, 6, generator=g) < 0.7
    base = noisy_linear_imputation(x, removed, noise=0.0)
    iters = noisy_linear_imputation.last_iterations
    assert (base - imputed_by_dense_solve(x, removed)).abs().max() < 2e-5
    for scale in (2.0 ** -12, 2.0 ** 12):
        torch.testing.assert_close(noisy_linear_imputation(x * scale, removed, noise=0.0) / scale, base,
                                   rtol=1e-6, atol=1e-9)
        assert noisy_linear_imputation.last_iterations == iters


def test_imputation_in_float64_is_the_exact_solution_rounded_on_three_channels():
    g = gen(73)
    x = torch.rand(2, 3, 5, 6, generator=g)  # float32 images, solved in float64
    removed = torch.rand(2, 5, 6, generator=g) < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no out= buffer of the wrong shape resized
        out = noisy_linear_imputation(x, removed, noise=0.0, tol=1e-12, dtype=torch.float64)
    assert out.dtype == torch.float32
    ref = imputed_by_dense_solve(x, removed).float()
    assert (out - ref).abs().max() <= 6e-8  # at most one float32 rounding step in [0, 1)
    # float64 images solved in float32 (the default) come back as float32 numbers
    xd = x.double()
    out = noisy_linear_imputation(xd, removed, noise=0.0)
    assert out.dtype == torch.float64 and torch.equal(out, out.float().double())
    assert (out - imputed_by_dense_solve(x, removed)).abs().max() < 2e-5
    # the noise is the generator's draws in the solver's dtype
    clean = noisy_linear_imputation(xd, removed, noise=0.0, dtype=torch.float64)
    noisy = noisy_linear_imputation(xd, removed, noise=0.5, generator=gen(74), dtype=torch.float64)
    draws = torch.randn(x.shape, generator=gen(74), dtype=torch.float64)
    torch.testing.assert_close(noisy, torch.where(removed[:, None], clean + 0.5 * draws, xd), rtol=0, atol=1e-14)


def test_imputation_converged_images_leave_once_an_eighth_of_the_stack_is_done():
    """An image whose residual is below the limit at a check stops iterating only once an eighth of
    the images still iterating are done (copying the stack costs more before): with one easy image
    and 7 hard ones it stops at its own check, with 8 hard ones it iterates on with them."""
    g = gen(75)
    x = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    removed = torch.zeros(2, 8, 8, dtype=torch.bool)
    removed[0, 2:5, 2:6] = removed[0, 5, 3] = removed[0, 1, 4] = True  # 14 pixels: done after 8 iterations
    removed[1] = torch.rand(8, 8, generator=g) < 0.8  # 42 pixels: done after 16
    (easy, res_e), (hard, res_h) = [jacobi_pcg(*neighbour_system(x, removed, i), 24) for i in range(2)]
    b_max = max(np.abs(neighbour_system(x, removed, i)[1]).max() for i in range(2))
    limit = 2e-6 * b_max
    assert res_e[4] > 4 * limit and res_e[8] < limit / 4 and res_h[16] < limit / 4  # not borderline
    assert all(res_h[k] > 4 * limit for k in (4, 8, 12)) and np.abs(easy[16] - easy[8]).max() > 1e-8
    for n_hard, easy_stop in ((7, 8), (8, 16)):
        idx = [0] + [1] * n_hard
        out = noisy_linear_imputation(x[idx], removed[idx], noise=0.0, tol=2e-6, dtype=torch.float64)
        assert noisy_linear_imputation.last_iterations == 16
        np.testing.assert_allclose(out[0, 0][removed[0]].numpy(), easy[easy_stop], rtol=0, atol=1e-12)
        for j in range(1, n_hard + 1):
            np.testing.assert_allclose(out[j, 0][removed[1]].numpy(), hard[16], rtol=0, atol=1e-12)


def test_removal_masks_take_int_f_hw_most_or_least_salient_pixels():
    maps = torch.randn(2, 3, 5, generator=gen(26))
    masks = {o: removal_masks(maps, [0.0, 0.5, 0.99], o) for o in ("morf", "lerf")}
    for o, m in masks.items():
        assert m.shape == (2, 3, 3, 5)
        for i in range(2):
            order = order_of(maps[i].abs().flatten().tolist(), o == "morf")
            for j, k in enumerate([0, 7, 14]):  # int(7.5) = 7, int(14.85) = 14
                ref = torch.zeros(15, dtype=torch.bool)
                ref[order[:k]] = True
                assert torch.equal(m[i, j].flatten(), ref)


def test_road_scores_the_given_class_on_each_imputed_image():
    model = linear_net(c=2, h=5, w=6, k=4, scale=10.0, seed=2)
    g = gen(27)
    x, maps = torch.rand(5, 2, 5, 6, generator=g), torch.randn(5, 5, 6, generator=g)
    classes = torch.tensor([0, 3, 1, 1, 2])
    fractions = [0.2, 0.5, 0.8]
    for order in ("morf", "lerf"):
        res = road(model, x, maps, classes, order=order, fractions=fractions, noise=0.0, batch_size=4)
        masks = removal_masks(maps, fractions, order)
        clean = softmax_of(model, x)[torch.arange(5), classes]
        p = [softmax_of(model, imputed_by_dense_solve(x, masks[:, j]).float()) for j in range(3)]
        prob = torch.stack([pj[torch.arange(5), classes] for pj in p], 1)
        pred = torch.stack([pj.argmax(1) for pj in p], 1)
        assert res["fractions"] == fractions
        torch.testing.assert_close(res["clean"], clean)
        torch.testing.assert_close(res["prob"], prob, atol=1e-4, rtol=0)
        torch.testing.assert_close(res["drop"], (clean[:, None] - prob).mean(1), atol=1e-4, rtol=0)
        assert torch.equal(res["correct"], pred == classes[:, None])
        assert res["accuracy"] == pytest.approx((pred == classes[:, None]).float().mean(0).tolist())
    noisy = road(model, x, maps, classes, fractions=[0.0, 0.5], noise=0.05, generator=gen(3))
    torch.testing.assert_close(noisy["prob"][:, 0], clean)  # nothing removed at 0
    with pytest.raises(SgtlabError, match="order"):
        road(model, x, maps, classes, order="random")
    for bad in (dict(fractions=[]), dict(fractions=[-0.1]), dict(fractions=[1.0]), dict(fractions=[1.5])):
        with pytest.raises(SgtlabError, match=r"ROAD removal fractions must be in \[0, 1\)"):  # not the imputation's
            road(model, x, maps, classes, **bad)
    with pytest.raises(SgtlabError, match="noise"):
        road(model, x, maps, classes, noise=-0.01)


def test_road_noise_comes_from_the_generator_default_0_01():
    model = linear_net(c=1, h=4, w=4, k=3, scale=10.0, seed=3)
    g = gen(60)
    x, maps = torch.rand(6, 1, 4, 4, generator=g), torch.randn(6, 4, 4, generator=g)
    classes = torch.tensor([0, 1, 2, 0, 1, 2])
    masks = removal_masks(maps, [0.25, 0.5], "morf")
    for noise in (0.05, 0.01):
        gg = gen(61)
        imputed = [noisy_linear_imputation(x, masks[:, j], noise, gg) for j in range(2)]
        ref = torch.stack([softmax_of(model, t)[torch.arange(6), classes] for t in imputed], 1)
        kw = {"noise": noise} if noise == 0.05 else {}  # 0.01 by default
        res = road(model, x, maps, classes, fractions=[0.25, 0.5], generator=gen(61), **kw)
        torch.testing.assert_close(res["prob"], ref)
    quiet = road(model, x, maps, classes, fractions=[0.25, 0.5], noise=0.0)
    assert (quiet["prob"] - res["prob"]).abs().max() > 1e-4


def test_road_over_more_than_one_imputation_chunk():
    """4100 one-pixel-removed 2 x 2 images: imputed 4096 at a time, every image scored once."""
    model = linear_net(c=1, h=2, w=2, k=2, scale=5.0, seed=4)
    g = gen(62)
    x, maps = torch.rand(4100, 1, 2, 2, generator=g), torch.rand(4100, 2, 2, generator=g)
    classes = torch.randint(0, 2, (4100,), generator=g)
    res = road(model, x, maps, classes, fractions=[0.25], noise=0.0)
    assert res["prob"].shape == (4100, 1)
    for idx in (slice(0, 5), slice(4094, 4100)):
        part = road(model, x[idx], maps[idx], classes[idx], fractions=[0.25], noise=0.0)
        torch.testing.assert_close(res["prob"][idx], part["prob"])


# -- sanity checks ------------------------------------------------------------------------------------

from sgtlab.evaluate import sanity_checks as sc  # noqa: E402
from sgtlab.evaluate.saliency_metrics import spearman_abs, ssim  # noqa: E402


class Scale(nn.Module):
    """Owns a parameter but cannot re-initialise it: not randomisable."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.s * x


def sanity_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(64, 6), Scale(), nn.Tanh()), nn.Linear(6, 3))


def grad_explainer(m, x, c):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m(x).gather(1, c[:, None]).sum(), x)
    return g[:, 0]


def test_randomisable_layers_are_the_layers_with_own_parameters_output_first():
    model = sanity_net()
    assert [name for name, _ in sc.randomisable_layers(model)] == ["2", "1.0"]
    assert [m for _, m in sc.randomisable_layers(model)] == [model[2], model[1][0]]


def test_interval_is_scipys_t_interval_without_nans():
    v = torch.tensor([0.2, float("nan"), 0.5, 0.9, 0.4])
    a = np.array([0.2, 0.5, 0.9, 0.4])
    lo, hi = st.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=st.sem(a))
    m, l_, h_ = sc._interval(v)
    assert (m, l_, h_) == pytest.approx((a.mean(), lo, hi))
    lo90, hi90 = st.t.interval(0.9, len(a) - 1, loc=a.mean(), scale=st.sem(a))
    assert sc._interval(v, 0.9)[1:] == pytest.approx((lo90, hi90))
    one = sc._interval(torch.tensor([0.3, float("nan")]))
    assert one[0] == pytest.approx(0.3) and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(t) for t in sc._interval(torch.tensor([float("nan")])))
    assert sc.verdict(torch.tensor([0.3]))[0] == "unclear"  # one image: no interval


def test_verdict_compares_the_interval_with_the_threshold():
    high, low = torch.tensor([0.8, 0.9, 0.85]), torch.tensor([0.1, 0.0, 0.05])
    spread = torch.tensor([0.0, 1.0, 0.2, 0.8])
    assert sc.verdict(high)[0] == "fail" and sc.verdict(low)[0] == "pass" and sc.verdict(spread)[0] == "unclear"
    assert sc.verdict(high, threshold=1.0)[0] == "pass" and sc.verdict(low, threshold=-0.5)[0] == "fail"
    same = torch.full((3,), 0.5)  # the interval is the point 0.5: neither above nor below
    assert sc.verdict(same)[0] == "unclear"
    status, m, lo, hi = sc.verdict(high)
    assert (m, lo, hi) == pytest.approx(sc._interval(high))


def test_cascading_randomisation_re_initialises_one_more_layer_per_step():
    model = sanity_net()
    before = copy.deepcopy(model.state_dict())
    x, classes = torch.rand(6, 1, 8, 8, generator=gen(30)), torch.tensor([0, 1, 2, 0, 1, 2])
    explainers = {"input": lambda m, xx, cc: xx[:, 0] + 1.0, "grad": grad_explainer}
    torch.manual_seed(123)
    res = sc.cascading_randomisation(model, x, classes, explainers, seed=7, threshold=0.4)
    after_rng = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after_rng, torch.rand(3))  # the caller's random stream is untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # the reference: the same cascade by hand
    work = copy.deepcopy(model)
    torch.manual_seed(7)
    orig = grad_explainer(model, x, classes)
    ref_sp, ref_ss = [], []
    for layer in (work[2], work[1][0]):
        with torch.no_grad():
            layer.reset_parameters()
        r = grad_explainer(work, x, classes)
        ref_sp.append(spearman_abs(orig, r))
        ref_ss.append(ssim(orig, r))
    g = res["methods"]["grad"]
    assert res["layers"] == ["2", "1.0"] and res["threshold"] == 0.4 and res["n"] == 6
    assert np.allclose(g["spearman"], [s.tolist() for s in ref_sp], atol=1e-6)
    assert np.allclose(g["ssim"], [s.tolist() for s in ref_ss], atol=1e-6)
    assert g["spearman_mean"] == pytest.approx([s.mean().item() for s in ref_sp], abs=1e-6)
    assert g["ssim_mean"] == pytest.approx([s.mean().item() for s in ref_ss], abs=1e-6)
    status, m, lo, hi = sc.verdict(ref_sp[-1], 0.4)
    assert g["verdict"] == status and g["last_spearman"] == pytest.approx({"mean": m, "lo": lo, "hi": hi}, abs=1e-6)
    inp = res["methods"]["input"]
    assert inp["spearman_mean"] == pytest.approx([1.0, 1.0]) and inp["verdict"] == "fail"
    # given maps are the originals
    given = {"grad": torch.rand(6, 8, 8, generator=gen(31))}
    res2 = sc.cascading_randomisation(model, x, classes, {"grad": grad_explainer}, seed=7, maps=given)
    work = copy.deepcopy(model)
    torch.manual_seed(7)
    with torch.no_grad():
        work[2].reset_parameters()
    first = spearman_abs(given["grad"], grad_explainer(work, x, classes))
    assert res2["methods"]["grad"]["spearman"][0] == pytest.approx(first.tolist(), abs=1e-6)
    with pytest.raises(SgtlabError, match="N x C x H x W"):
        sc.cascading_randomisation(model, x[:, 0], classes, explainers)
    with pytest.raises(SgtlabError, match="no saliency method"):
        sc.cascading_randomisation(model, x, classes, {})
    with pytest.raises(SgtlabError, match="no layer"):
        sc.cascading_randomisation(nn.Sequential(nn.Flatten(), Scale()), x, classes, explainers)


def test_label_randomisation_compares_the_two_models_maps():
    model, random_model = sanity_net(0), sanity_net(1)
    x, classes = torch.rand(5, 1, 8, 8, generator=gen(32)), torch.tensor([0, 1, 2, 2, 1])
    explainers = {"grad": grad_explainer, "input": lambda m, xx, cc: xx[:, 0]}
    res = sc.label_randomization_check(model, random_model, x, classes, explainers, threshold=0.3)
    real, rand = grad_explainer(model, x, classes), grad_explainer(random_model, x, classes)
    sp, ss = spearman_abs(real, rand), ssim(real, rand)
    g = res["methods"]["grad"]
    assert res["threshold"] == 0.3 and res["n"] == 5
    assert g["spearman"] == pytest.approx(sp.tolist(), abs=1e-6) and g["ssim"] == pytest.approx(ss.tolist(), abs=1e-6)
    assert g["spearman_mean"] == pytest.approx(sp.mean().item(), abs=1e-6)
    assert g["ssim_mean"] == pytest.approx(ss.mean().item(), abs=1e-6)
    status, m, lo, hi = sc.verdict(sp, 0.3)
    assert g["verdict"] == status and g["spearman_ci"] == pytest.approx({"mean": m, "lo": lo, "hi": hi}, abs=1e-6)
    assert res["methods"]["input"]["verdict"] == "fail"
    given = torch.rand(5, 8, 8, generator=gen(33))
    res2 = sc.label_randomization_check(model, random_model, x, classes, {"grad": grad_explainer}, maps={"grad": given})
    assert res2["methods"]["grad"]["spearman"] == pytest.approx(spearman_abs(given, rand).tolist(), abs=1e-6)
    with pytest.raises(SgtlabError, match="N x C x H x W"):
        sc.label_randomization_check(model, random_model, x[:, 0], classes, explainers)
    with pytest.raises(SgtlabError, match="no saliency method"):
        sc.label_randomization_check(model, random_model, x, classes, {})


class Buckets(nn.Module):
    """One pixel read: class 0 below 0, 1 in [0, 0.5], 2 in (0.5, 1], 3 above 1 (one-hot logits)."""

    def forward(self, x):
        p = x.flatten(1)[:, 0]
        cls = torch.where(p < 0, 0, torch.where(p > 1, 3, torch.where(p > 0.5, 2, 1)))
        return F.one_hot(cls, 4).float() * 10


def test_low_saliency_noise_is_clipped_uniform_noise_on_the_support():
    """One-pixel images, one call per image: q = 1 adds the generator's first uniform draw u as
    (2u - 1) eps and clips to [0, 1]; the class says on which side of 0, 0.5 and 1 the pixel ended."""
    model = Buckets()
    for i, v in enumerate(torch.linspace(0, 1, 21).tolist()):
        x = torch.full((1, 1, 1, 1), v)
        y = torch.tensor([1 if v <= 0.5 else 2])
        for eps in (0.3, 0.6):
            res = low_saliency_curve(model, x, y, torch.ones(1, 1, 1), qs=[0, 1], eps=eps, pgd=False,
                                     generator=gen(100 + i))
            u = torch.rand(1, generator=gen(100 + i)).item()
            p = min(1.0, max(0.0, v + (2 * u - 1) * eps))
            assert res["noise"] == [1.0, float((p > 0.5) == (v > 0.5))], (v, eps, u)
        default = low_saliency_curve(model, x, y, torch.ones(1, 1, 1), qs=[1], pgd=False, generator=gen(100 + i))
        p = min(1.0, max(0.0, v + (2 * u - 1) * 0.3))  # eps = 0.3 by default
        assert default["noise"] == [float((p > 0.5) == (v > 0.5))] and default["eps"] == 0.3
    assert low_saliency_curve(model, x, y, torch.ones(1, 1, 1), qs=[0])["pgd_steps"] == 10  # the default


def test_masked_accuracy_masks_the_round_p_hw_most_salient_pixels():
    """A model that reads only the centre pixel (class 1 iff it is at the image's maximum, which the
    fill, drawn below the maximum, never reaches): an image stays correct at level p iff the centre's
    rank in its map is at least round(p / 100 * 25) (10 % -> 2, 30 % -> 8 (7.5 rounds up), 50 % -> 12)."""

    class Centre(nn.Module):
        def forward(self, x):
            z = (x[:, 0, 2, 2] - 0.99999) * 1e5
            return torch.stack([-z, z], 1)

    ranks = [0, 1, 2, 6, 7, 8, 11, 12, 24]
    x = torch.zeros(len(ranks), 1, 5, 5)
    x[:, 0, 2, 2] = 1.0
    maps = torch.zeros(len(ranks), 5, 5)
    for i, r in enumerate(ranks):
        values = torch.arange(25, 0, -1).float()  # distinct: rank j has value 25 - j
        values[[12, r]] = values[[r, 12]]  # the centre (pixel 12) gets rank r
        maps[i] = values.view(5, 5) * (-1) ** i  # the sign does not matter
    ps = [0, 10, 30, 50, 100]
    res = masked_accuracy(Centre(), x, torch.ones(len(ranks), dtype=torch.long), maps, ps=ps, generator=gen(41))
    expect = torch.tensor([[r >= k for k in (0, 2, 8, 12, 25)] for r in ranks])
    assert torch.equal(res["top_correct"], expect)
    with pytest.raises(SgtlabError, match="percent"):
        masked_accuracy(Centre(), x, torch.ones(len(ranks), dtype=torch.long), maps, ps=[100.5])


def test_low_saliency_edge_cases_eps_zero_one_pgd_image_and_no_attacked_q():
    n, h, w = 8, 4, 4
    means = torch.tensor([0.9, 0.55, 0.85, 0.56, 0.45, 0.95, 0.2, 0.58])
    x = means.view(n, 1, 1, 1).expand(n, 1, h, w).clone()
    y = torch.tensor([1, 1, 1, 1, 1, 0, 0, 1])  # clean: 6 of 8 correct
    maps = torch.rand(n, h, w, generator=gen(42))
    model = Margin()
    zero = low_saliency_curve(model, x, y, maps, qs=[0, 1.0], eps=0.0, pgd_steps=2)  # eps = 0 is allowed
    assert zero["noise"] == [0.75, 0.75] and zero["pgd"] == [0.75, 0.75]
    one = low_saliency_curve(model, x, y, maps, qs=[0, 1.0], eps=0.1, pgd_steps=10, pgd_n=1)
    assert one["pgd_n"] == 1 and one["pgd"] == [1.0, 1.0]  # image 0 (mean 0.9) stays correct
    clean_only = low_saliency_curve(model, x, y, maps, qs=[0, 1.0], eps=0.1, pgd_qs=[0])
    assert clean_only["pgd_q"] == [0] and clean_only["pgd"] == [0.75]


def test_aopc_on_a_cpu_takes_the_local_path_by_default(monkeypatch):
    import sgtlab.evaluate.perturbation_metrics as pm

    calls = []
    real = pm.aopc_probs_local

    def spy(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(pm, "aopc_probs_local", spy)
    model = conv_net()
    x, maps = torch.rand(2, 2, 7, 6, generator=gen(43)), torch.rand(2, 7, 6, generator=gen(44))
    fast = aopc(model, x, maps, patch=2, steps=3, fill=torch.zeros_like(x))
    assert len(calls) == 1
    plain = aopc(model, x, maps, patch=2, steps=3, fill=torch.zeros_like(x), local=False)
    assert len(calls) == 1
    torch.testing.assert_close(fast["prob"], plain["prob"], atol=1e-5, rtol=0)


def test_sanity_defaults_threshold_seed_and_the_last_of_three_steps():
    """threshold 0.5 and seed 0 by default; the verdict reads the last step (all layers random)
    and the caller's threshold: maps equal to the input have Spearman 1 at every step, which is
    above 0.5 ("fail") but below 1.5 ("pass")."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, classes = torch.rand(4, 1, 8, 8, generator=gen(50)), torch.tensor([0, 1, 2, 0])
    explainers = {"input": lambda m, xx, cc: xx[:, 0], "grad": grad_explainer}
    res = sc.cascading_randomisation(model, x, classes, explainers)
    assert res["threshold"] == 0.5 and res["methods"]["input"]["verdict"] == "fail"
    assert res == sc.cascading_randomisation(model, x, classes, explainers, seed=0)
    assert res != sc.cascading_randomisation(model, x, classes, explainers, seed=1)
    high = sc.cascading_randomisation(model, x, classes, explainers, threshold=1.5)
    assert high["methods"]["input"]["verdict"] == "pass"
    g = res["methods"]["grad"]
    assert len(g["spearman"]) == 3
    assert g["last_spearman"]["mean"] == pytest.approx(float(np.mean(g["spearman"][2])))
    lab = sc.label_randomization_check(model, model, x, classes, explainers)
    assert lab["threshold"] == 0.5 and lab["methods"]["input"]["verdict"] == "fail"
    lab = sc.label_randomization_check(model, model, x, classes, explainers, threshold=1.5)
    assert lab["methods"]["input"]["verdict"] == "pass"


def test_interval_of_two_values_and_randomisable_blocks():
    a = np.array([0.2, 0.4])
    lo, hi = st.t.interval(0.95, 1, loc=0.3, scale=st.sem(a))
    assert sc._interval(torch.tensor(a)) == pytest.approx((0.3, lo, hi))

    class Block(nn.Module):  # can reset, but owns no parameter itself: its Linear is the layer
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def reset_parameters(self):
            self.lin.reset_parameters()

    assert [n for n, _ in sc.randomisable_layers(nn.Sequential(Block(), nn.Linear(4, 2)))] == ["1", "0.lin"]


def _local_heads():
    """Small models whose layers after the local ones the Linear shortcut of the local AOPC path
    must read right: nothing, not a Flatten first, a Flatten of other dims, nothing after Flatten, a
    Linear behind an eval-mode dropout or an Identity, two Linears in a row, in-place layers after
    them; and non-square kernels, a grouped convolution."""
    conv = lambda c: [nn.Conv2d(1, c, 3, padding=1), nn.ReLU()]  # noqa: E731
    return {
        "avgpool": nn.Sequential(*conv(3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 4)),
        "flatten2": nn.Sequential(*conv(3), nn.Flatten(2), nn.Linear(64, 5), nn.Flatten(), nn.Linear(15, 4)),
        "conv-logits": nn.Sequential(nn.Conv2d(1, 4, 8), nn.Flatten()),
        "conv-only": nn.Sequential(nn.Conv2d(1, 4, 8)),  # N x 4 x 1 x 1 logits, nothing after the local layers
        "dropout-2-linears": nn.Sequential(*conv(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(128, 128),
                                           nn.Linear(128, 4)),
        "identity-linear": nn.Sequential(*conv(2), nn.Flatten(), nn.Identity(), nn.Linear(128, 4)),
        "2-linears": nn.Sequential(*conv(2), nn.Flatten(), nn.Linear(128, 128), nn.Linear(128, 4)),
        "non-square": nn.Sequential(nn.Conv2d(1, 3, (3, 5), padding=(1, 2)), nn.ReLU(), nn.MaxPool2d((2, 4)),
                                    nn.Conv2d(3, 3, (1, 2), padding=(0, 1)), nn.Flatten(), nn.Linear(3 * 4 * 3, 4)),
        "grouped": nn.Sequential(*conv(4), nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Flatten(), nn.Linear(256, 4)),
        # in-place layers that are not idempotent after the kept outputs (the Linear's, the last conv's)
        "inplace-mlp": nn.Sequential(*conv(2), nn.Flatten(), nn.Linear(128, 16), nn.LeakyReLU(0.1, inplace=True),
                                     nn.Linear(16, 4)),
        "inplace-1-channel": nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Flatten(), nn.LeakyReLU(0.1, inplace=True),
                                           nn.Linear(64, 4)),
    }


@pytest.mark.parametrize("name", list(_local_heads()))
def test_local_aopc_reads_the_head_after_the_local_layers(name):
    from sgtlab.fast.aopc_local import local_plan

    torch.manual_seed(3)
    model = _local_heads()[name].eval()
    with torch.no_grad():  # sharp outputs, so that a layer skipped or misread shows
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(4)
    assert local_plan(model) is not None
    x, maps = torch.rand(5, 1, 8, 8, generator=gen(80)), torch.rand(5, 8, 8, generator=gen(81))
    fill = torch.rand(x.shape, generator=gen(82))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no softmax over an implicit dimension
        fast = aopc(model, x, maps, patch=2, steps=6, fill=fill)
    plain = aopc(model, x, maps, patch=2, steps=6, fill=fill, local=False)
    assert torch.equal(fast["pred"], plain["pred"])
    torch.testing.assert_close(fast["prob"], plain["prob"], atol=1e-5, rtol=0)
    assert (plain["prob"][:, 1:] - plain["prob"][:, :1]).abs().max() > 1e-3  # the steps change the outputs
    # every patch replaced (steps = the 4 patches of 4 px)
    fast = aopc(model, x, maps, patch=4, steps=4, fill=fill)
    torch.testing.assert_close(fast["prob"], aopc(model, x, maps, patch=4, steps=4, fill=fill, local=False)["prob"],
                               atol=1e-5, rtol=0)


def test_local_plan_splits_off_the_leading_per_pixel_and_window_layers():
    """`local_plan`: (kind, layer) for the leading layers whose output pixel depends on one input
    pixel ("point": activations, normalisation, eval-mode dropout and batch-norm) or a window
    ("conv": stride 1; "pool": kernel = stride), the rest from the first other layer on. Train-mode
    batch-norm (batch statistics) and dropout (random) are not local."""
    from sgtlab.fast.aopc_local import local_plan
    from sgtlab.models.base import Normalize

    layers = [Normalize((0.5,), (0.25,)), nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Dropout2d(),
              nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, stride=2), nn.Flatten(), nn.Linear(2, 3)]
    model = nn.Sequential(*layers).eval()
    plan, rest = local_plan(model)
    assert [k for k, _ in plan] == ["point", "conv", "point", "point", "point", "pool"]
    assert [m for _, m in plan] == layers[:6] and rest == layers[6:]
    plan, rest = local_plan(model.train())  # batch-norm in training mode ends the local layers
    assert [m for _, m in plan] == layers[:2] and rest == layers[2:]
    drop = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(), nn.Flatten(), nn.Linear(2, 3)).train()
    assert [m for _, m in local_plan(drop)[0]] == [drop[0]]
