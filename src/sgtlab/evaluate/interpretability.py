"""Saliency-map quality, as SPEC.md "Saliency maps and their quality" defines each metric.

Every metric is a function of batched tensors returning one value per image (or one curve point per
level); `interpretability_metrics` runs the chosen ones for a model, a data set and saliency
methods, and returns a JSON-ready dict (`summary`, `curves`, `per_image`, `examples`).

Perturbation metrics (AOPC, masked accuracy, low-saliency noise) build every perturbed copy of
every image with one rank comparison (`ranks < k`) and `torch.where`, then send them through the
model in large batches: no loop over images or steps.
"""
from __future__ import annotations

import math
import zlib
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.device import eval_batch_size
from sgtlab.evaluate.aopc_local import aopc_probs_local, local_plan
from sgtlab.errors import SgtlabError

METRICS = ("entropy", "size", "gini", "aopc", "masked_accuracy", "low_saliency", "localisation")
MASKED_PS = tuple(range(0, 100, 10))
LOW_SALIENCY_QS = tuple(i / 10 for i in range(11))
# Options for a quick look (the `quick` preset): few SmoothGrad samples and IG steps, short AOPC
# curves, coarse masking / noise grids, PGD on one support (q = 0.5) with 3 steps: about 40 model
# passes per image and saliency method instead of about 350.
QUICK_OPTIONS = dict(method_options={"smoothgrad": {"samples": 4}, "ig": {"steps": 8}}, aopc_steps=10,
                     masked_ps=(0, 20, 40, 60, 80), qs=(0.0, 0.25, 0.5, 0.75, 1.0), pgd_qs=(0.0, 0.5), pgd_steps=3)


# -- input checks ---------------------------------------------------------------------------------

def _check_maps(maps: torch.Tensor, name: str = "maps") -> None:
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3 or not maps.is_floating_point():
        raise SgtlabError(f"{name} must be a float tensor N x H x W, got {getattr(maps, 'shape', type(maps).__name__)}")


def _check_pair(x: torch.Tensor, maps: torch.Tensor) -> None:
    _check_maps(maps)
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise SgtlabError(f"images must be a tensor N x C x H x W, got {getattr(x, 'shape', type(x).__name__)}")
    if (x.shape[0], *x.shape[2:]) != tuple(maps.shape):
        raise SgtlabError(f"maps of shape {tuple(maps.shape)} do not fit images of shape {tuple(x.shape)} "
                          f"(expected {(x.shape[0], *x.shape[2:])})")


def _check_fractions(values: Sequence[float], name: str, hi: float = 1.0) -> list[float]:
    values = [float(v) for v in values]
    if not values or any(not (0 <= v <= hi) for v in values):
        raise SgtlabError(f"{name} must be a non-empty list of values in [0, {hi:g}], got {values}")
    return values


# -- map statistics -------------------------------------------------------------------------------

def saliency_entropy(maps: torch.Tensor) -> torch.Tensor:
    """Bhatt et al. 2020 (quantus `Complexity`): `p = |s| / sum |s|`, `H = -sum p ln(p + 1e-12)`,
    nats, in `[0, ln(H*W)]`. An all-zero map has no distribution: NaN."""
    _check_maps(maps)
    a = maps.abs().flatten(1).double()
    p = a / a.sum(1, keepdim=True)
    return -(p * torch.log(p + 1e-12)).sum(1).float()


def saliency_gini(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of `|s|` (Chalasani et al. 2020; quantus `Sparseness`): sorted ascending,
    `G = sum_i (2i - n - 1) a_(i) / (n sum a)`; 0 for a uniform map, `1 - 1/n` for a one-hot one.
    An all-zero map: NaN."""
    _check_maps(maps)
    a = maps.abs().flatten(1).double().sort(1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
    return (((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))).float()


def saliency_size(maps: torch.Tensor) -> torch.Tensor:
    """`|s|` min-max scaled per image to [0, 255], rounded to uint8 (row-major H x W bytes), then the
    length of `zlib.compress(level=9)` in KiB. A constant map scales to all zeros."""
    _check_maps(maps)
    a = maps.abs().flatten(1).double()
    lo, hi = a.amin(1, keepdim=True), a.amax(1, keepdim=True)
    scaled = ((a - lo) / (hi - lo).clamp_min(1e-300) * 255).round().to(torch.uint8).cpu().numpy()
    # zlib works on one buffer at a time: one call per image (cheap next to any model call).
    return torch.tensor([len(zlib.compress(row.tobytes(), 9)) / 1024 for row in scaled])


def localisation(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of the saliency mass `sum |s|` that lies inside `region` (N x H x W bool), per image
    (Decoy-MNIST: the decoy patch, the digit). An all-zero map: NaN."""
    _check_maps(maps)
    if not isinstance(region, torch.Tensor) or tuple(region.shape) != tuple(maps.shape):
        raise SgtlabError(f"the region mask must be N x H x W like the maps {tuple(maps.shape)}, "
                          f"got {getattr(region, 'shape', type(region).__name__)}")
    a = maps.abs().flatten(1).double()
    inside = (a * region.to(a.device).flatten(1).to(a.dtype)).sum(1)
    return (inside / a.sum(1)).float()


# -- batched perturbation core --------------------------------------------------------------------

def ranks_of(scores: torch.Tensor, descending: bool) -> torch.Tensor:
    """Position of each unit (last dim) in the per-row order; units with rank < k are the first k
    (ties keep index order: stable sort, so a reference loop gets the same order)."""
    order = torch.argsort(scores, dim=-1, descending=descending, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return ranks


def _perturbed(x: torch.Tensor, fill: torch.Tensor, ranks_pix: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """`x` with the units ranked below each `k` replaced by `fill`: N x K x C x H x W.
    `ranks_pix`: N x (H*W), the rank of each pixel's unit."""
    n, c, h, w = x.shape
    mask = (ranks_pix[:, None, :] < ks.to(ranks_pix.device)[None, :, None]).view(n, len(ks), 1, h, w)
    return torch.where(mask, fill[:, None], x[:, None])


@torch.no_grad()
def _probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Softmax probabilities for a (large) stack of images, in chunks, on the model's device."""
    dev = _model_device(model)
    return torch.cat([F.softmax(model(x[i:i + batch_size].to(dev)), 1) for i in range(0, len(x), batch_size)])


from sgtlab.device import model_device as _model_device  # noqa: E402  (the one device helper)


def _chunk(n_levels: int, batch_size: int) -> int:
    """Images per chunk so that one chunk's perturbed stack is about `batch_size` images."""
    return max(1, batch_size // max(1, n_levels))


def _eval(model: nn.Module):
    from sgtlab.explain.base import prepared  # eval mode + restore, shared with saliency_maps

    return prepared(model)


def default_patch(h: int) -> int:
    """SPEC: 2 px patches for 28 px images, 4 for 32 px (about 14 and 8 patches per side)."""
    return 4 if h >= 32 else 2


def patch_scores(maps: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed `|s|` per non-overlapping `patch x patch` patch (N x P; edge patches are smaller when
    the size is not a multiple) and the patch index of each pixel (H*W)."""
    n, h, w = maps.shape
    scores = F.avg_pool2d(maps.abs()[:, None], patch, ceil_mode=True, divisor_override=1).flatten(1)
    gw = math.ceil(w / patch)
    rows = torch.arange(h, device=maps.device) // patch
    cols = torch.arange(w, device=maps.device) // patch
    return scores, (rows[:, None] * gw + cols[None, :]).flatten()


def aopc(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, *, order: str = "morf", patch: int | None = None,
         steps: int | None = None, fill: torch.Tensor | None = None, generator: torch.Generator | None = None,
         batch_size: int | None = None, local: bool = True) -> dict[str, torch.Tensor]:
    """AOPC (Samek et al. 2017). Patches ranked by summed `|s|` are replaced one per step, most
    relevant first (`morf`) or least relevant first (`lerf`), by uniform random values in [0, 1]
    (`fill`, N x C x H x W; drawn from `generator` when not given), for `steps` steps (default half
    the patches). With `f` the softmax probability of the class predicted on the clean image:
    `aopc = mean_{k=0..L} (f(x) - f(x_k))`.

    On a CPU, a `Sequential` model that starts with convolutions, point-wise layers and max-pools
    is evaluated by local recomputation (`aopc_local`, same numbers; `local=False`: a forward of
    every perturbed image).

    Returns `aopc` (N), `prob` (N x L+1: f(x_k)), `pred` (N)."""
    _check_pair(x, maps)
    batch_size = eval_batch_size(batch_size, _model_device(model))
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
    probs, preds = [], []
    with _eval(model):
        # on a CPU, models that start with local layers recompute only what each step changes
        plan = local_plan(model) if (local and _model_device(model).type == "cpu" == x.device.type) else None
        chunk = batch_size if plan else _chunk(steps + 1, batch_size)
        for i in range(0, n, chunk):
            if plan:
                p = aopc_probs_local(*plan, x[i:i + chunk], fill[i:i + chunk], ranks_pix[i:i + chunk], pix_patch,
                                     math.ceil(w / patch), patch, steps)
            else:
                xs = _perturbed(x[i:i + chunk], fill[i:i + chunk], ranks_pix[i:i + chunk], ks)
                p = _probs(model, xs.flatten(0, 1), batch_size).view(len(xs), steps + 1, -1)
            pred = p[:, 0].argmax(1)  # k = 0 is the clean image
            probs.append(p.gather(2, pred[:, None, None].expand(-1, steps + 1, 1))[..., 0])
            preds.append(pred)
    prob = torch.cat(probs).cpu()
    return {"aopc": (prob[:, :1] - prob).mean(1), "prob": prob, "pred": torch.cat(preds).cpu()}


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
    _check_pair(x, maps)
    batch_size = eval_batch_size(batch_size, _model_device(model))
    ps = _check_fractions(ps, "masked-accuracy levels p (percent)", 100)
    n, c, h, w = x.shape
    fill = uniform_fill_like(x, generator)
    rand_scores = torch.rand((n, h * w), generator=generator, device="cpu").to(x.device)
    ks = torch.tensor([round(p / 100 * h * w) for p in ps])
    out: dict[str, Any] = {"p": ps}
    chunk = _chunk(len(ps), batch_size)
    with _eval(model):
        for name, scores in (("top", maps.to(x.device).abs().flatten(1)), ("random", rand_scores)):
            ranks = ranks_of(scores, descending=True)
            correct = []
            for i in range(0, n, chunk):
                xs = _perturbed(x[i:i + chunk], fill[i:i + chunk], ranks[i:i + chunk], ks)
                pred = _probs(model, xs.flatten(0, 1), batch_size).argmax(1).view(len(xs), len(ps)).cpu()
                correct.append(pred == y[i:i + chunk].cpu()[:, None])
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
                       pgd_qs: Sequence[float] | None = None, pgd_steps: int = 10,
                       generator: torch.Generator | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """SCAAT's check: accuracy when only the `q` fraction of least-salient pixels is perturbed, by
    uniform noise in [-eps, eps] (clipped to [0, 1]) and by PGD (L-inf `eps`, `pgd_steps` steps,
    `sgtlab.attacks.PGD` with the support as its mask), for each q (`pgd_qs`: PGD's own coarser
    grid, default `qs`). q = 0 perturbs nothing (clean accuracy; not attacked). PGD stops per
    sample at the first step that misclassifies it, as the robustness sweep does: a sample counts
    as fooled once any iterate fools it, and fooled samples cost no further steps (1.45x faster on
    an ST sgt-cnn). Numbers match judging the last iterate only, or are lower, up to float rounding:
    the batch shrinks as samples leave, which can flip the sign of a near-zero gradient entry
    (measured: a sample in 128, either way, at some q)."""
    _check_pair(x, maps)
    batch_size = eval_batch_size(batch_size, _model_device(model))
    qs = _check_fractions(qs, "low-saliency fractions q")
    if not eps >= 0:
        raise SgtlabError(f"eps must be >= 0, got {eps}")
    n, c, h, w = x.shape
    dev = x.device
    support = low_saliency_masks(maps.to(dev), qs)  # N x Q x H x W
    noise = (torch.rand(x.shape, generator=generator, device="cpu").to(dev) * 2 - 1) * eps
    y = y.to(dev)
    out: dict[str, Any] = {"q": qs, "eps": eps}
    chunk = _chunk(len(qs), batch_size)
    correct = []
    with _eval(model):
        for i in range(0, n, chunk):
            m = support[i:i + chunk, :, None]
            xs = (x[i:i + chunk, None] + noise[i:i + chunk, None] * m).clamp(0, 1)
            pred = _probs(model, xs.flatten(0, 1), batch_size).argmax(1).view(len(m), len(qs))
            correct.append(pred == y[i:i + chunk, None])
    out["noise"] = torch.cat(correct).float().mean(0).tolist()
    if pgd:
        from sgtlab.attacks import PGD

        attack = PGD(steps=pgd_steps)
        pqs = qs if pgd_qs is None else _check_fractions(pgd_qs, "PGD fractions q")
        attacked = [j for j, q in enumerate(pqs) if q > 0]  # q = 0: nothing may move, clean accuracy
        # every (image, q) pair is one row of one large PGD batch
        support = low_saliency_masks(maps.to(dev), pqs)[:, attacked].flatten(0, 1)[:, None]
        hits = []
        with _eval(model):
            for i in range(0, n * len(attacked), batch_size):
                idx = torch.arange(i, min(i + batch_size, n * len(attacked)), device=dev) // len(attacked)
                xa = attack(model, x[idx], y[idx], eps, check=False, mask=support[i:i + batch_size],
                            early_stop=True)
                hits.append(_probs(model, xa, batch_size).argmax(1) == y[idx])
            acc_by_q = torch.cat(hits).view(n, len(attacked)).float().mean(0).tolist() if attacked else []
            clean = _accuracy(model, x, y, batch_size) if len(attacked) < len(pqs) else None
        accs = [acc_by_q[attacked.index(j)] if j in attacked else clean for j in range(len(pqs))]
        out["pgd_q"], out["pgd"], out["pgd_steps"] = pqs, accs, pgd_steps
    return out


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    with _eval(model):
        return (_probs(model, x, batch_size).argmax(1) == y.to(_model_device(model))).float().mean().item()


# -- everything for one model ---------------------------------------------------------------------

def _resolve_metrics(metrics: str | Sequence[str], has_regions: bool) -> list[str]:
    if metrics == "all":
        return [m for m in METRICS if m != "localisation" or has_regions]
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise SgtlabError(f"unknown interpretability metric {', '.join(unknown)}; choose from: all, {', '.join(METRICS)}")
    if "localisation" in names and not has_regions:
        raise SgtlabError("the localisation metric needs a data set with known regions (extras 'patch_mask' and "
                          "'digit_mask', e.g. decoy-mnist)")
    return names


def _stats(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    v = v[~torch.isnan(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    return v.mean().item(), (v.std().item() if len(v) > 1 else 0.0)


def interpretability_metrics(model: nn.Module, data, methods: Sequence[str] | str = ("grad",),
                             metrics: str | Sequence[str] = "all", n: int | None = 256, *,
                             method_options: dict[str, dict] | None = None, aopc_patch: int | None = None,
                             aopc_steps: int | None = None, masked_ps: Sequence[float] = MASKED_PS,
                             qs: Sequence[float] = LOW_SALIENCY_QS, eps: float = 0.3, pgd: bool = True,
                             pgd_qs: Sequence[float] | None = None, pgd_steps: int = 10, seed: int = 0,
                             batch_size: int | None = None, n_examples: int = 8, progress: bool | Callable = False
                             ) -> dict[str, Any]:
    """All chosen metrics for every saliency method, on the first `n` images of `data` (a
    `TensorData`), with the true labels as saliency targets.

    Returns a JSON-ready dict: `summary[method][metric]` scalars (`<metric>_mean`, `<metric>_std`,
    `aopc_rel`, curve means), `curves[method]` (AOPC, masked accuracy, low-saliency), `per_image
    [method]` (entropy, size_kib, gini, aopc_morf, aopc_lerf, decoy/digit shares), `examples`
    (the first `n_examples` images and their maps, for the map grid), `options`. `progress`: True for
    a tqdm bar, or a callable taking a step label. All random values
    (AOPC and masking fills, noise) come from `seed`, the same for every method and model."""
    from sgtlab.explain import SALIENCY, saliency_maps

    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise SgtlabError("no saliency method given")
    for m in methods:
        SALIENCY.get(m)
    method_options = dict(method_options or {})
    has_regions = {"patch_mask", "digit_mask"} <= set(getattr(data, "extras", {}) or {})
    names = _resolve_metrics(metrics, has_regions)
    if n is not None and n < 1:
        raise SgtlabError(f"n must be >= 1, got {n}")
    from sgtlab.data.inputs import as_data

    data = as_data(data).subset(n)  # (x, y), TensorDataset, DataLoader or TensorData; checked
    dev = _model_device(model)
    batch_size = eval_batch_size(batch_size, dev)
    x, y = data.x.to(dev), data.y.to(dev)
    bar = None
    if callable(progress):
        tick = progress
    elif progress:
        from tqdm import tqdm

        per_method = 1 + sum(m in names for m in ("aopc", "masked_accuracy", "low_saliency"))
        bar = tqdm(total=len(methods) * per_method, desc="interpretability", unit="step", leave=False)

        def tick(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)
    else:
        tick = lambda label: None  # noqa: E731
    result: dict[str, Any] = {
        "n": len(data), "dataset": getattr(data, "name", ""), "methods": methods, "metrics": names,
        "options": {"method_options": method_options, "aopc_patch": aopc_patch or default_patch(x.shape[2]),
                    "aopc_steps": aopc_steps, "masked_ps": list(masked_ps), "qs": list(qs), "eps": eps,
                    "pgd": pgd, "pgd_qs": None if pgd_qs is None else list(pgd_qs), "pgd_steps": pgd_steps,
                    "seed": seed},
        "summary": {}, "curves": {}, "per_image": {},
        "examples": {"images": x[:n_examples].cpu(), "labels": y[:n_examples].cpu(), "maps": {}},
    }
    for method in methods:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)  # SmoothGrad's noise (captum draws from the global RNG)
            maps = saliency_maps(model, x, y, method, **method_options.get(method, {}))
        tick(f"{method}: maps")
        gen = lambda: torch.Generator().manual_seed(seed)  # noqa: E731  same fills for every method
        summ: dict[str, float] = {}
        per: dict[str, Any] = {}
        curves: dict[str, Any] = {}
        for name, fn, key in (("entropy", saliency_entropy, "entropy"), ("size", saliency_size, "size_kib"),
                              ("gini", saliency_gini, "gini")):
            if name in names:
                per[key] = fn(maps).cpu()
        if "aopc" in names:
            fill = torch.rand(x.shape, generator=gen()).to(dev)
            res = {o: aopc(model, x, maps, order=o, patch=aopc_patch, steps=aopc_steps, fill=fill,
                           batch_size=batch_size) for o in ("morf", "lerf")}
            per["aopc_morf"], per["aopc_lerf"] = res["morf"]["aopc"], res["lerf"]["aopc"]
            curves["aopc"] = {o: (r["prob"][:, :1] - r["prob"]).mean(0).tolist() for o, r in res.items()}
            curves["aopc"]["k"] = list(range(res["morf"]["prob"].shape[1]))
            tick(f"{method}: aopc")
        if "localisation" in names:
            per["decoy_share"] = localisation(maps, data.extras["patch_mask"])
            per["digit_share"] = localisation(maps, data.extras["digit_mask"])
        for key, values in per.items():
            summ[f"{key}_mean"], summ[f"{key}_std"] = _stats(values)
        if "aopc" in names:
            lerf = summ["aopc_lerf_mean"]
            summ["aopc_rel"] = summ["aopc_morf_mean"] / lerf if lerf != 0 else float("nan")
        if "masked_accuracy" in names:
            ma = masked_accuracy(model, x, y, maps, ps=masked_ps, generator=gen(), batch_size=batch_size)
            curves["masked_accuracy"] = {k: ma[k] for k in ("p", "top", "random")}
            summ["masked_acc_top_mean"] = float(np.mean(ma["top"]))
            summ["masked_acc_random_mean"] = float(np.mean(ma["random"]))
            tick(f"{method}: masked accuracy")
        if "low_saliency" in names:
            ls = low_saliency_curve(model, x, y, maps, qs=qs, eps=eps, pgd=pgd, pgd_qs=pgd_qs, pgd_steps=pgd_steps,
                                    generator=gen(), batch_size=batch_size)
            curves["low_saliency"] = ls
            summ["low_sal_noise_mean"] = float(np.mean(ls["noise"]))
            if pgd:
                summ["low_sal_pgd_mean"] = float(np.mean(ls["pgd"]))
            tick(f"{method}: low-saliency curve")
        result["summary"][method] = summ
        result["curves"][method] = curves
        result["per_image"][method] = {k: v.tolist() for k, v in per.items()}
        result["examples"]["maps"][method] = maps[:n_examples].cpu()
    if bar is not None:
        bar.close()
    result["examples"]["images"] = result["examples"]["images"].tolist()
    result["examples"]["labels"] = result["examples"]["labels"].tolist()
    result["examples"]["maps"] = {k: v.tolist() for k, v in result["examples"]["maps"].items()}
    return result


def summary_rows(result: dict[str, Any], **ids: Any) -> list[dict[str, Any]]:
    """One flat row per saliency method (`ids` first, e.g. run=..., model=...), for a CSV table."""
    return [{**ids, "method": m, "n": result["n"], **s} for m, s in result["summary"].items()]
