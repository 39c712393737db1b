"""Perturbation metrics: AOPC, the SGT paper's masked accuracy and SCAAT's low-saliency curve, each
one call on batched tensors, built on the engine of `sgtlab.evaluate.perturb` (and, for AOPC on a
CPU, the local-recomputation fast path `sgtlab.fast.aopc_local`, which refuses models it cannot
compute exactly)."""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from sgtlab.device import eval_batch_size
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.perturb import (check_classes, check_fractions, check_pair, chunk, default_patch, evaluating,
                                     model_device, patch_scores, perturbed, probs, ranks_of)
from sgtlab.evaluate.saliency_metrics.faithfulness import aopc_from_probs
from sgtlab.fast.aopc_local import aopc_probs_local, local_plan

MASKED_PS = tuple(range(0, 100, 10))
LOW_SALIENCY_QS = tuple(i / 10 for i in range(11))


def aopc(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, *, classes: torch.Tensor | None = None,
         order: str = "morf", patch: int | None = None, steps: int | None = None, fill: torch.Tensor | None = None,
         generator: torch.Generator | None = None, batch_size: int | None = None, local: bool = True
         ) -> dict[str, torch.Tensor]:
    """AOPC (Samek et al. 2017). Patches ranked by summed `|s|` are replaced one per step, most
    relevant first (`morf`) or least relevant first (`lerf`), by uniform random values in [0, 1]
    (`fill`, N x C x H x W; drawn from `generator` when not given), for `steps` steps (default half
    the patches). With `f_c` the softmax probability of class `c`: `aopc = mean_{k=0..L} (f_c(x) -
    f_c(x_k))` (`aopc_from_probs`). `classes` (N): the class each map explains, scored here too
    (the metrics' default is the true label); None: the class predicted on the clean image.

    On a CPU, a `Sequential` model that starts with convolutions, point-wise layers and max-pools
    is evaluated by local recomputation (`aopc_local`, same numbers; `local=False`: a forward of
    every perturbed image).

    Returns `aopc` (N), `prob` (N x L+1: f_c(x_k)), `pred` (N: the clean prediction), `cls` (N)."""
    check_pair(x, maps)
    batch_size = eval_batch_size(batch_size, model_device(model))
    if order not in ("morf", "lerf"):
        raise SgtlabError(f"AOPC order must be 'morf' or 'lerf', got {order!r}")
    n, c, h, w = x.shape
    patch = patch or default_patch(h)
    scores, pix_patch = patch_scores(maps.to(x.device), patch)
    n_patches = scores.shape[1]
    steps = n_patches // 2 if steps is None else steps
    if not 1 <= steps <= n_patches:
        raise SgtlabError(f"AOPC steps must be in [1, {n_patches}] ({n_patches} patches of {patch} px), got {steps}")
    if fill is None:
        fill = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
    if fill.shape != x.shape:
        raise SgtlabError(f"the fill values must have the images' shape {tuple(x.shape)}, got {tuple(fill.shape)}")
    ranks_pix = ranks_of(scores, descending=(order == "morf"))[:, pix_patch]
    ks = torch.arange(steps + 1)
    if classes is not None:
        classes = check_classes(classes, n)
    prob_c, preds, cls = [], [], []
    with evaluating(model):
        # on a CPU, models that start with local layers recompute only what each step changes
        plan = local_plan(model) if (local and model_device(model).type == "cpu" == x.device.type) else None
        chunk_ = batch_size if plan else chunk(steps + 1, batch_size)
        for i in range(0, n, chunk_):
            if plan:
                p = aopc_probs_local(*plan, x[i:i + chunk_], fill[i:i + chunk_], ranks_pix[i:i + chunk_], pix_patch,
                                     math.ceil(w / patch), patch, steps)
            else:
                xs = perturbed(x[i:i + chunk_], fill[i:i + chunk_], ranks_pix[i:i + chunk_], ks)
                p = probs(model, xs.flatten(0, 1), batch_size).view(len(xs), steps + 1, -1)
            pred = p[:, 0].argmax(1)  # k = 0 is the clean image
            c = pred if classes is None else classes[i:i + chunk_].to(pred.device)
            prob_c.append(p.gather(2, c[:, None, None].expand(-1, steps + 1, 1))[..., 0])
            preds.append(pred)
            cls.append(c)
    prob = torch.cat(prob_c).cpu()
    return {"aopc": aopc_from_probs(prob), "prob": prob, "pred": torch.cat(preds).cpu(), "cls": torch.cat(cls).cpu()}


def uniform_fill_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random values in each image's own per-channel [min, max] (SPEC's masking M_k)."""
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return lo + (hi - lo) * torch.rand(x.shape, generator=generator, device="cpu").to(x.device)


def masked_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor, *,
                    ps: Sequence[float] = MASKED_PS, generator: torch.Generator | None = None,
                    batch_size: int | None = None) -> dict[str, Any]:
    """SGT paper's check: accuracy after masking the top `p %` salient pixels against `p %` random
    pixels, `p` in `ps`. Masked pixels (all channels) get uniform random values in the image's own
    per-channel [min, max] (SPEC's M_k fill; our choice for this check) — the same values for the
    salient and the random mask. Returns `p`, `top`, `random` (accuracy per level) and per-image
    correctness `top_correct`, `random_correct` (N x len(ps) bool)."""
    check_pair(x, maps)
    batch_size = eval_batch_size(batch_size, model_device(model))
    ps = check_fractions(ps, "masked-accuracy levels p (percent)", 100)
    n, c, h, w = x.shape
    fill = uniform_fill_like(x, generator)
    rand_scores = torch.rand((n, h * w), generator=generator, device="cpu").to(x.device)
    ks = torch.tensor([round(p / 100 * h * w) for p in ps])
    out: dict[str, Any] = {"p": ps}
    step = chunk(len(ps), batch_size)
    with evaluating(model):
        for name, scores in (("top", maps.to(x.device).abs().flatten(1)), ("random", rand_scores)):
            ranks = ranks_of(scores, descending=True)
            correct = []
            for i in range(0, n, step):
                xs = perturbed(x[i:i + step], fill[i:i + step], ranks[i:i + step], ks)
                pred = probs(model, xs.flatten(0, 1), batch_size).argmax(1).view(len(xs), len(ps)).cpu()
                correct.append(pred == y[i:i + step].cpu()[:, None])
            corr = torch.cat(correct)
            out[name] = corr.float().mean(0).tolist()
            out[f"{name}_correct"] = corr
    return out


def low_saliency_masks(maps: torch.Tensor, qs: Sequence[float]) -> torch.Tensor:
    """N x Q x H x W bool: the `q` fraction of each image's least-salient pixels, for each q."""
    n, h, w = maps.shape
    ranks = ranks_of(maps.abs().flatten(1), descending=False)
    ks = torch.tensor([round(q * h * w) for q in qs], device=maps.device)
    return (ranks[:, None, :] < ks[None, :, None]).view(n, len(qs), h, w)


def low_saliency_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor, *,
                       qs: Sequence[float] = LOW_SALIENCY_QS, eps: float = 0.3, pgd: bool = True,
                       pgd_qs: Sequence[float] | None = None, pgd_steps: int = 10, pgd_n: int | None = None,
                       generator: torch.Generator | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """SCAAT's check: accuracy when only the `q` fraction of least-salient pixels is perturbed, by
    uniform noise in [-eps, eps] (clipped to [0, 1]) and by PGD (L-inf `eps`, `pgd_steps` steps,
    `sgtlab.attacks.PGD` with the support as its mask), for each q (`pgd_qs`: PGD's own coarser
    grid, default `qs`; `pgd_n`: PGD on the first `pgd_n` images only, default all). q = 0 perturbs
    nothing (clean accuracy; not attacked). PGD stops per
    sample at the first step that misclassifies it, as the robustness sweep does: a sample counts
    as fooled once any iterate fools it, and fooled samples cost no further steps (1.45x faster on
    an ST sgt-cnn). Numbers match judging the last iterate only, or are lower, up to float rounding:
    the batch shrinks as samples leave, which can flip the sign of a near-zero gradient entry
    (measured: a sample in 128, either way, at some q)."""
    check_pair(x, maps)
    batch_size = eval_batch_size(batch_size, model_device(model))
    qs = check_fractions(qs, "low-saliency fractions q")
    if not eps >= 0:
        raise SgtlabError(f"eps must be >= 0, got {eps}")
    n, c, h, w = x.shape
    dev = x.device
    support = low_saliency_masks(maps.to(dev), qs)  # N x Q x H x W
    noise = (torch.rand(x.shape, generator=generator, device="cpu").to(dev) * 2 - 1) * eps
    y = y.to(dev)
    out: dict[str, Any] = {"q": qs, "eps": eps}
    step = chunk(len(qs), batch_size)
    correct = []
    with evaluating(model):
        for i in range(0, n, step):
            m = support[i:i + step, :, None]
            xs = (x[i:i + step, None] + noise[i:i + step, None] * m).clamp(0, 1)
            pred = probs(model, xs.flatten(0, 1), batch_size).argmax(1).view(len(m), len(qs))
            correct.append(pred == y[i:i + step, None])
    out["noise"] = torch.cat(correct).float().mean(0).tolist()
    if pgd:
        from sgtlab.attacks import PGD

        attack = PGD(steps=pgd_steps)
        if pgd_n is not None:
            if pgd_n < 1:
                raise SgtlabError(f"pgd_n must be >= 1, got {pgd_n}")
            x, y, maps, n = x[:pgd_n], y[:pgd_n], maps[:pgd_n], min(n, pgd_n)
        pqs = qs if pgd_qs is None else check_fractions(pgd_qs, "PGD fractions q")
        attacked = [j for j, q in enumerate(pqs) if q > 0]  # q = 0: nothing may move, clean accuracy
        # every (image, q) pair is one row of one large PGD batch
        support = low_saliency_masks(maps.to(dev), pqs)[:, attacked].flatten(0, 1)[:, None]
        hits = []
        with evaluating(model):
            for i in range(0, n * len(attacked), batch_size):
                idx = torch.arange(i, min(i + batch_size, n * len(attacked)), device=dev) // len(attacked)
                xa = attack(model, x[idx], y[idx], eps, check=False, mask=support[i:i + batch_size],
                            early_stop=True)
                hits.append(probs(model, xa, batch_size).argmax(1) == y[idx])
            acc_by_q = torch.cat(hits).view(n, len(attacked)).float().mean(0).tolist() if attacked else []
            clean = _accuracy(model, x, y, batch_size) if len(attacked) < len(pqs) else None
        accs = [acc_by_q[attacked.index(j)] if j in attacked else clean for j in range(len(pqs))]
        out["pgd_q"], out["pgd"], out["pgd_steps"], out["pgd_n"] = pqs, accs, pgd_steps, n
    return out


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    with evaluating(model):
        return (probs(model, x, batch_size).argmax(1) == y.to(model_device(model))).float().mean().item()
