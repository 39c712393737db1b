"""Pieces shared by the saliency-guided and adversarial methods: the KL term, the masking step
with the config's options, the per-method default of `k`, and forwards shared over inputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.fast.graphs import Graphed
from sgtlab.saliency import mask_lowest, saliency, saliency_and_clean_logits

# The one place where `--k` gets its per-method default when not given (the papers' settings,
# SPEC.md): SGT and SGA 0.5 (MNIST SGT), ASGT 0.1.
DEFAULT_K = {"sgt": 0.5, "sga": 0.5, "asgt": 0.1}


def resolve_k(cfg, method: str) -> float:
    return DEFAULT_K[method] if cfg.k is None else cfg.k


def kl_term(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) exactly as SPEC.md writes it, gradients through both arguments."""
    return F.kl_div(F.log_softmax(q_logits, dim=1), F.log_softmax(p_logits, dim=1), log_target=True,
                    reduction="batchmean")


def runs_module(model: nn.Module, module: nn.Module) -> bool:
    """True when calling `model` is calling `module` in this process: `module` itself or its
    CUDA-graph replay (`sgtlab.fast.graphs.Graphed`, the same kernels), not a DDP wrapper. The
    methods then take the same path, in the same order of random draws, as with `module`."""
    return model is module or (isinstance(model, Graphed) and model.module is module)


def attack_model(model: nn.Module, module: nn.Module) -> nn.Module:
    """What a method's inner attack runs: the CUDA-graph replay when the training forward has one,
    else the plain module (never DDP's wrapper: its hooks are for the training forward)."""
    return model if runs_module(model, module) else module


def saliency_mask(module: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg, k: float) -> torch.Tensor:
    """M_k(x, S(x, y)) with the config's saliency and fill options."""
    s = saliency(module, x, y, mode=cfg.saliency, target=cfg.saliency_target)
    return mask_lowest(x, s, k, fill=cfg.mask_fill, low=cfg.mask_low, high=cfg.mask_high)


def saliency_mask_and_clean(model: nn.Module, module: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg,
                            k: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """M_k(x, S(x, y)) and, where the saliency pass can share its forward with the training one,
    the train-mode logits of x (else None). Never under a DDP wrapper (`runs_module` false):
    DDP must see the training forward itself to synchronise the gradients."""
    if not runs_module(model, module):
        return saliency_mask(module, x, y, cfg, k), None
    s, clean = saliency_and_clean_logits(module, x, y, mode=cfg.saliency, target=cfg.saliency_target)
    return mask_lowest(x, s, k, fill=cfg.mask_fill, low=cfg.mask_low, high=cfg.mask_high), clean


def batch_coupled(module: nn.Module) -> bool:
    """True when a sample's train-mode output depends on the other samples of its batch (batch-norm
    statistics; instance-norm running statistics), so inputs may not be concatenated into one batch."""
    return any(isinstance(m, nn.modules.batchnorm._NormBase) for m in module.modules())


def forward_many(model: nn.Module, module: nn.Module, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """Logits of each input: one forward over their concatenation, or one forward per input.

    Concatenated under DDP (one forward per backward, as DDP expects) and on a GPU (one kernel
    launch per layer instead of several), when the model has no batch-coupled layers: the same maths,
    dropout masks being drawn per element either way. Separate on a CPU: a doubled batch leaves the
    caches and costs more per image (sgt-cnn, forward and backward of two batches of 128: 173 ms
    concatenated, 118 ms separate, on 2 threads), and with batch-norm anywhere, so each input is
    normalised by its own batch statistics, as separate passes of the reference code are."""
    if len(inputs) == 1:
        return [model(inputs[0])]
    if batch_coupled(module) or (runs_module(model, module) and inputs[0].device.type == "cpu"):
        return [model(t) for t in inputs]
    return list(model(torch.cat(inputs)).split([t.shape[0] for t in inputs]))


# -- the training attacks' budget: a linear warm-up ----------------------------------------------------

def warmup_factor(cfg, ctx) -> float:
    """The fraction of the training budget at this step: (step + 1) / W over the first
    W = eps_warmup x total_steps steps (never 0: the first step attacks with eps / W), then exactly 1.
    It depends on the global step and the run's length only, so a run resumed from a checkpoint
    uses the same budgets as an uninterrupted one (a run extended to more epochs stretches the ramp,
    as it stretches a cosine learning rate). `eps_warmup` 0, or an unknown length (total_steps 0):
    1 from the first step, the training of before the option."""
    w = cfg.eps_warmup * ctx.total_steps
    if w <= 0 or ctx.step + 1 >= w:
        return 1.0
    return (ctx.step + 1) / w


def current_eps(cfg, ctx, eps: float | None = None) -> float:
    """The training budget at this step: `eps` (default `train_eps`) x `warmup_factor`."""
    eps = cfg.train_eps if eps is None else eps
    f = warmup_factor(cfg, ctx)
    return eps if f == 1.0 else eps * f


def pgd_budget(cfg, ctx, eps: float | None = None) -> tuple[float, float | None]:
    """(eps, alpha) of a PGD training attack at this step. During the warm-up the step size scales
    with the budget: an explicit `train_alpha` is the step at the full budget (the runner writes out
    PGD's default 2.5 eps / steps, so a preset's run and a `train` run with no alpha take the same
    steps), and a step kept while eps shrinks would overshoot the ball at every step. Outside the
    warm-up the options pass through unchanged."""
    eps = cfg.train_eps if eps is None else eps
    f = warmup_factor(cfg, ctx)
    if f == 1.0:
        return eps, cfg.train_alpha
    alpha = 2.5 * eps / cfg.train_steps if cfg.train_alpha is None else cfg.train_alpha
    return eps * f, alpha * f


def fgsm_budget(cfg, ctx) -> tuple[float, float]:
    """(eps, alpha) of AT-FGSM at this step: alpha `fgsm_alpha` (default 1.25 eps with random start,
    else eps), both scaled by the warm-up as in `pgd_budget`."""
    eps = cfg.train_eps
    alpha = cfg.fgsm_alpha if cfg.fgsm_alpha is not None else (1.25 * eps if cfg.random_start else eps)
    f = warmup_factor(cfg, ctx)
    return (eps, alpha) if f == 1.0 else (eps * f, alpha * f)
