"""Robust accuracy of a model for a list of attacks over a grid of eps, per sample.

The sweep uses the nesting of L-inf balls: an adversarial image found inside the eps_i-ball lies
inside every larger ball, so per attack the eps grid is walked upwards and at each eps only the
samples still robust at the previous one are attacked; samples misclassified when clean are never
attacked. Iterative attacks also stop per sample as soon as it is misclassified. Both only ever
skip work whose outcome is already known, so the numbers are never above those of attacking every
image from scratch at every eps (they can only be lower: a sample fooled at a smaller eps counts
as fooled at every larger one).

The result is per sample: for each attack, the smallest eps of the grid at which the sample was
misclassified (0 when misclassified clean, inf when never), from which any aggregate follows.
So the nested sweep's accuracy at eps is the accuracy under the best attack over every eps' <= eps
of the grid: a sound lower bound, monotone by construction; reports say so ("best over eps' <= eps").

`from_scratch=True` runs each eps on its own (every clean-correct sample attacked at every eps,
as the papers do): slower, and its curves may rise with eps, which is itself a sign of gradient
masking (FGSM's most of all; `masking_checks.fgsm_curve_not_rising` flags it).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn

from sgtlab.attacks.base import Attack, build_attack, ce_grad, check_inputs
from sgtlab.device import eval_mode, model_device
from sgtlab.data.base import TensorData
from sgtlab.device import eval_batch_size
from sgtlab.errors import SgtlabError
from sgtlab.evaluate.robustness_result import RobustnessResult
from sgtlab.fast.batch_threads import map_batches, split_batches
from sgtlab.fast.graphs import graphed

__all__ = ["AttackSpec", "RobustnessResult", "check_eps_grid", "resolve_attacks", "robustness_sweep"]

AttackSpec = Sequence[str | Attack] | Mapping[str, str | Attack]


def resolve_attacks(attacks: AttackSpec) -> dict[str, Attack | None]:
    """Names/objects -> {label: Attack}; checked before any work. `ensemble` among other attacks is
    derived from them (None here: no extra work); alone, it runs its default members."""
    items = list(attacks.items()) if isinstance(attacks, Mapping) else [
        (a, a) if isinstance(a, str) else (a.name, a) for a in attacks]
    if not items:
        raise SgtlabError("no attacks given")
    out: dict[str, Attack | None] = {}
    for label, a in items:
        if label in out:
            raise SgtlabError(f"attack {label!r} is given twice")
        # open detail: the name "ensemble" among other attacks is the worst case over those (no extra work)
        out[label] = None if (a == "ensemble" and len(items) > 1) else build_attack(a) if isinstance(a, str) else a
    return out


def check_eps_grid(eps: Sequence[float]) -> list[float]:
    eps = [float(e) for e in eps]
    if not eps:
        raise SgtlabError("no eps values given")
    bad = [e for e in eps if not (e >= 0 and math.isfinite(e))]
    if bad:
        raise SgtlabError(f"eps must be finite and >= 0, got {bad[0]!r}")
    return sorted(set(eps))


def robustness_sweep(model: nn.Module, data: TensorData | tuple[torch.Tensor, torch.Tensor], attacks: AttackSpec,
                     eps: Sequence[float], n: int | None = None, batch_size: int | None = None, progress: bool = True,
                     seed: int = 0, from_scratch: bool = False, autocast: str | None = None,
                     cuda_graphs: bool = False) -> RobustnessResult:
    """Clean and robust accuracy for each attack at each eps (see the module doc; `from_scratch`:
    every eps on its own instead of the nested walk).

    `autocast="bf16"`: the attacks' forward and backward passes run under bfloat16 autocast (faster
    on GPUs and on CPUs with bf16 units); the clean pass and the verdict on each adversarial image
    stay in float32, so every image counted as fooled is fooled by the float32 model (a weaker attack
    at worst, never a wrong verdict; docs/attacks.md gives the measured difference).

    `cuda_graphs=True`: on CUDA the attacks' forwards and backwards replay as CUDA graphs
    (`sgtlab.fast.graphs`: the same numbers, fewer launches); elsewhere, or for a hooked model, a
    warning and the plain model.

    Random starts (PGD) at the j-th eps (ascending) are drawn for the whole evaluated set as
    `torch.manual_seed(seed + j); torch.empty_like(x).uniform_(-eps, eps)` on the CPU, so each
    sample starts exactly where a from-scratch torchattacks run with that seed starts it.
    """
    from tqdm.auto import tqdm

    from sgtlab.data.inputs import as_data

    data = as_data(data)  # (x, y), TensorDataset, DataLoader or TensorData; checked
    x, y = data.x, data.y
    if n is not None:
        if n < 1:
            raise SgtlabError(f"n must be >= 1, got {n}")
        x, y = x[:n], y[:n]
    grid = check_eps_grid(eps)
    plan = resolve_attacks(attacks)
    if autocast not in (None, "bf16"):
        raise SgtlabError(f"autocast must be None or 'bf16', got {autocast!r}")
    check_inputs(x, y, grid[-1])
    device = model_device(model)
    batch_size = eval_batch_size(batch_size, device)
    x, y = x.detach().cpu(), y.detach().cpu()
    attacked = graphed(model, device, cuda_graphs)  # the attacks' passes; verdicts on the plain model

    with eval_mode(model):
        need_grad = any(a is not None and a.uses_clean_grad for a in plan.values())
        clean_pred, clean_grad = _clean_pass(model, x, y, batch_size, device, need_grad)
        correct = clean_pred == y
        first: dict[str, torch.Tensor] = {}
        outcomes: dict[str, torch.Tensor] = {}
        radii: dict[str, torch.Tensor] = {}
        attacked_n: dict[str, dict[str, int]] = {}  # images each attack ran on, per eps
        bar = tqdm(total=len(plan) * len(grid), disable=not progress, desc="attacks", unit="eps", leave=False)
        for label, attack in plan.items():
            if attack is None:
                continue
            if getattr(attack, "minimum_norm", False):
                bar.set_postfix_str(f"{label} (minimum norm)")
                r = radii[label] = _radii(attack, model, attacked, x, y, correct, grid[-1], batch_size, device,
                                          autocast)
                first[label], outcomes[label] = _from_radii(r, correct, grid)
                attacked_n[label] = {"all eps": int(correct.sum())}  # one run for the whole grid
                bar.update(len(grid))
                continue
            # float64: the grid values are stored exactly, so CSV text compares as the tensors do
            f = torch.where(correct, math.inf, 0.0).double()
            robust = correct[:, None].repeat(1, len(grid))  # from scratch: outcome per (sample, eps)
            attacked_n[label] = {}
            for j, e in enumerate(grid):
                bar.set_postfix_str(f"{label} eps={e:g}")
                todo = (correct if from_scratch else torch.isinf(f)).nonzero().squeeze(1)
                attacked_n[label][f"{e:g}"] = len(todo) if e > 0 else 0
                if e > 0 and len(todo):
                    start = None
                    if attack.takes_init_delta:
                        g = torch.Generator().manual_seed(seed + j)
                        start = torch.empty_like(x).uniform_(-e, e, generator=g)
                    batches, workers = split_batches(todo, batch_size, model, device, attack.thread_safe)
                    run = _batch_run(attack, model, attacked, x, y, e, start, clean_grad, device, autocast)
                    for idx, fooled in zip(batches, map_batches(run, batches, workers)):
                        hit = idx[fooled]
                        f[hit] = torch.minimum(f[hit], torch.tensor(e, dtype=f.dtype))
                        robust[hit, j] = False
                bar.update(1)
            first[label] = f
            outcomes[label] = robust
        bar.close()
    derived = [k for k, v in plan.items() if v is None]
    for k in derived:  # the ensemble over the other attacks: the per-sample worst case
        first[k] = torch.stack([first[a] for a in plan if plan[a] is not None]).amin(0)
        outcomes[k] = torch.stack([outcomes[a] for a in plan if plan[a] is not None]).all(0)
    return RobustnessResult(list(plan), grid, y, clean_pred, first,
                            info={"attacks_run": {k: repr(v) for k, v in plan.items() if v is not None},
                                  "images_attacked": attacked_n, "seed": seed},
                            outcomes=outcomes if from_scratch else None, radii=radii)


def _batch_run(attack: Attack, model: nn.Module, attacked: nn.Module, x: torch.Tensor, y: torch.Tensor, e: float,
               start: torch.Tensor | None, clean_grad: torch.Tensor | None, device, autocast: str | None):
    """The work on one batch at eps `e`: `run(idx)` -> which of the samples `idx` the attack fooled
    (bool, CPU), as the float32 model judges. Grad mode and autocast are set here, since batches may
    run in worker threads (`sgtlab.fast.batch_threads`), where they are per thread."""
    # samples the attack's own early-stop forwards showed misclassified are judged already, when
    # those forwards were the float32 model's (not bf16 autocast, not CUDA graphs)
    trust = attack.supports_early_stop and attack.reports_fooled and autocast is None and attacked is model

    def run(idx: torch.Tensor) -> torch.Tensor:
        xb, yb = x[idx].to(device), y[idx].to(device)
        kw = {"early_stop": True} if attack.supports_early_stop else {}
        if start is not None:
            kw["init_delta"] = start[idx].to(device)
        if clean_grad is not None and attack.uses_clean_grad:
            kw["clean_grad"] = clean_grad[idx].to(device)
        known = None
        if trust:
            known = kw["fooled"] = torch.zeros(len(idx), dtype=torch.bool, device=device)
        with torch.enable_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast == "bf16"):
            adv = attack.perturb(attacked, xb, yb, e, **kw).to(xb.dtype)
        with torch.no_grad():
            if known is None:
                return (model(adv).argmax(1) != yb).cpu()
            rest = (~known).nonzero().squeeze(1)  # the verdict pass for the others only
            fooled = known.clone()
            if len(rest):
                fooled[rest] = model(adv[rest]).argmax(1) != yb[rest]
            return fooled.cpu()

    return run


def _radii(attack: Attack, model: nn.Module, attacked: nn.Module, x: torch.Tensor, y: torch.Tensor,
           correct: torch.Tensor, max_eps: float, batch_size: int, device, autocast: str | None) -> torch.Tensor:
    """A minimum-norm attack's radius per sample (float32, as the attacks apply eps): 0 where
    misclassified clean, inf where it found no adversarial image within `max_eps`. Its best images
    were judged by the forward pass that found them; only when that pass was not the float32 model
    itself (bf16 autocast, CUDA graphs) are they judged again."""
    out = torch.where(correct, math.inf, 0.0)
    todo = correct.nonzero().squeeze(1)
    recheck = autocast is not None or attacked is not model
    for b in range(0, len(todo), batch_size):
        idx = todo[b:b + batch_size]
        xb, yb = x[idx].to(device), y[idx].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast == "bf16"):
            best, radius, _ = attack.radii(attacked, xb, yb, max_eps)
        if recheck:
            with torch.no_grad():
                radius = torch.where(model(best.to(xb.dtype)).argmax(1) != yb, radius, math.inf)
        out[idx] = radius.float().cpu()
    return out


def _from_radii(radius: torch.Tensor, correct: torch.Tensor, grid: list[float]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(first fooling grid eps per sample, robust per sample and eps) from radii: fooled at eps
    when the radius is <= eps in float32 (the precision the attacks clamp in: an image at a budget
    of 0.3 lies 0.3 in float32 from the clean one, up to an ulp, as for every attack)."""
    g32 = torch.tensor(grid, dtype=torch.float32)
    fooled = radius[:, None] <= g32[None, :]
    fooled &= correct[:, None]
    j = torch.searchsorted(g32, radius.contiguous())  # the first grid value >= radius
    g64 = torch.tensor(grid + [math.inf], dtype=torch.float64)
    first = torch.where(correct, g64[j.clamp(max=len(grid))], 0.0)
    return first, correct[:, None] & ~fooled


def _clean_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device, need_grad: bool):
    """Clean predictions and, when an attack's first step needs it, the input gradient at the clean
    images: it does not depend on eps, so FGSM costs one gradient for the whole grid."""
    preds, grads = [], []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        if need_grad:
            logits, g = ce_grad(model, xb, yb)
            grads.append(g.cpu())
        else:
            with torch.no_grad():
                logits = model(xb)
        preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    return pred, (torch.cat(grads) if grads else None)
