"""Training-time saliency `S(x, y)` and the masking `M_k(x, S)` of SPEC.md.

Both are batched tensor code (no per-sample loops, no host syncs): they run inside every training
step of SGT, SGA, ASGT and SCAAT.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.device import eval_mode  # every submodule's own mode restored, not just the root's
from sgtlab.errors import SgtlabError
from sgtlab.fast.eligibility import has_hooks, run_input_checks

MODES = ("abs", "signed")
TARGETS = ("true", "pred")
FILLS = ("image", "fixed")


def _check(mode: str, target: str) -> None:
    if mode not in MODES:
        raise SgtlabError(f"unknown saliency mode {mode!r}; choose one of: {', '.join(MODES)}")
    if target not in TARGETS:
        raise SgtlabError(f"unknown saliency target {target!r}; choose one of: {', '.join(TARGETS)}")


def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str = "abs",
             target: str = "true") -> torch.Tensor:
    """`N x H x W` scores: the gradient of the target-class logit w.r.t. the input, averaged over
    channels; absolute value (mode "abs") or signed ("signed"); target the true label or the
    model's prediction ("pred"). Computed in eval mode (mode restored after), detached, and with
    `torch.autograd.grad` on the input only, so parameter `.grad`s are untouched and no weight
    gradient is computed. The abs is taken after the channel mean (a choice: the spec only says
    "averaged over channels"; the two agree on one-channel images)."""
    _check(mode, target)
    with eval_mode(model), torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        cls = logits.detach().argmax(1) if target == "pred" else y
        # the logits of different samples are independent in eval mode, so one backward of the sum
        # gives every sample's own input gradient
        (grad,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), xg)
    s = grad.mean(1)
    return s.abs() if mode == "abs" else s


# Layers whose output is the same in train and eval mode (exact types: a subclass may override
# `forward`). A model's leading run of these is computed once for both the eval-mode saliency pass
# and the train-mode training forward (see `saliency_and_clean_logits`).
MODE_FREE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU,
             nn.Tanh, nn.Sigmoid, nn.Softplus, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool2d,
             nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)


def _is_mode_free(m: nn.Module) -> bool:
    from sgtlab.models.base import Normalize
    from sgtlab.models.layers import MaxPool2d

    return type(m) in MODE_FREE or type(m) in (Normalize, MaxPool2d)


def _leaves(model: nn.Module) -> list[nn.Module] | None:
    """The layers of a (nested) `nn.Sequential`, in order; None for any other model."""
    if type(model) is not nn.Sequential:
        return None
    out: list[nn.Module] = []
    for m in model:
        sub = _leaves(m) if type(m) is nn.Sequential else [m]
        if sub is None:
            return None
        out.extend(sub)
    return out


def _run(layers: list[nn.Module], h: torch.Tensor) -> torch.Tensor:
    for m in layers:
        h = m(h)
    return h


def _first_conv(leaves: list[nn.Module], n: int) -> int | None:
    """Index of the first layer of the prefix when it is a plain `Conv2d` (zero padding given as
    numbers, one group) with only `Normalize` layers before it, else None."""
    from sgtlab.models.base import Normalize

    for i, m in enumerate(leaves[:n]):
        if type(m) is nn.Conv2d:
            ok = m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
            return i if ok else None
        if type(m) is not Normalize:
            return None
    return None


def conv_input_grad(conv: nn.Conv2d, g: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The gradient w.r.t. the input (spatial size `size`) of `conv` given the gradient `g` of its
    output. On a CPU as one matrix product (W^T g at every output position) folded back onto the
    input (col2im, `conv_input_grad_fold`): 4-5x faster than PyTorch's transposed convolution for a
    first layer with few input channels (sgt-cnn's 1 -> 32: 7 ms instead of 33 ms on a batch of 128);
    elsewhere PyTorch's own kernel (`conv_input_grad_kernel`). Same values up to float rounding."""
    if g.device.type != "cpu":
        return conv_input_grad_kernel(conv, g, size)
    return conv_input_grad_fold(conv, g, size)


def conv_input_grad_kernel(conv: nn.Conv2d, g: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`conv_input_grad` by PyTorch's input-gradient kernel (a transposed convolution)."""
    w = conv.weight.detach().to(g.dtype)
    return torch.nn.grad.conv2d_input((g.shape[0], w.shape[1], *size), w, g, conv.stride, conv.padding,
                                      conv.dilation)


def conv_input_grad_fold(conv: nn.Conv2d, g: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`conv_input_grad` as W^T g at every output position, folded back onto the input (col2im)."""
    w = conv.weight.detach().to(g.dtype)
    N, C = g.shape[:2]
    cols = torch.matmul(w.reshape(C, -1).t(), g.reshape(N, C, -1))
    return F.fold(cols, size, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)


def saliency_and_clean_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str = "abs",
                              target: str = "true") -> tuple[torch.Tensor, torch.Tensor | None]:
    """`saliency(model, x, y)` and, when the work can be shared, the train-mode logits `model(x)`
    (with their graph, for the training loss), else None.

    The saliency pass needs eval mode and the training forward the model's own mode, so they differ
    after the first dropout or batch-norm layer; but the layers before it give the same output in
    both modes. For a `Sequential` model that starts with such layers (sgt-cnn: norm, conv, relu,
    conv, relu, max-pool, i.e. nearly all its forward cost), that prefix runs once: the saliency
    gradient and the training loss both backpropagate through it. Exact: same values as two passes.

    When the prefix starts with a convolution (after `Normalize` layers), the graph starts at that
    convolution's output, not at `x`: the saliency gradient is taken there and carried to the input
    by `conv_input_grad` (and the normalisation's 1/std), so the training backward computes no input
    gradient at all, and the first layer's input gradient is computed once, by the faster kernel.
    Models with hooks take the plain path (two passes)."""
    _check(mode, target)
    # running the layers by hand skips hooks of the root and of nested containers: refuse hooked models
    leaves = None if has_hooks(model) else _leaves(model)
    n = 0
    while leaves is not None and n < len(leaves) and _is_mode_free(leaves[n]):
        n += 1
    if n == 0 or not torch.is_grad_enabled():
        return saliency(model, x, y, mode, target), None
    run_input_checks(model, x)  # what model(x) would check first
    c = _first_conv(leaves, n)
    if c is None:
        start = xg = x.detach().requires_grad_(True)
        h = _run(leaves[:n], xg)
    else:  # no graph before the first convolution: its input needs no gradient in training
        start = _run(leaves[:c + 1], x.detach())
        h = _run(leaves[c + 1:n], start)
    tail = leaves[n:]
    with eval_mode(model):
        logits = _run(tail, h)
    cls = logits.detach().argmax(1) if target == "pred" else y
    (grad,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), start, retain_graph=True)
    if c is not None:
        grad = conv_input_grad(leaves[c], grad, tuple(x.shape[-2:]))
        for m in reversed(leaves[:c]):  # Normalize: (x - mean) / std, whose input gradient is g / std
            grad = grad / m.std
    clean = _run(tail, h) if tail else logits  # a model without mode-dependent layers: the same logits
    s = grad.mean(1)
    return (s.abs() if mode == "abs" else s), clean


def n_masked(k: float, h: int, w: int) -> int:
    """floor(k * H * W); the rounding to 9 digits keeps e.g. 0.29 * 100 from flooring to 28."""
    return math.floor(round(k * h * w, 9))


def lowest_mask(scores: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """Boolean `N x 1 x H x W`: per image, the `n` positions of lowest score (ties broken by
    `topk`/`argsort` order, so exactly `n` positions). `n` is an int (one batched top-k) or a
    length-N integer tensor (per-sample counts, for SCAAT: a rank comparison)."""
    N, H, W = scores.shape
    flat = scores.reshape(N, H * W)
    if isinstance(n, torch.Tensor):
        order = flat.argsort(dim=1)
        ranks = torch.empty_like(order).scatter_(1, order, torch.arange(H * W, device=flat.device).expand(N, -1))
        sel = ranks < n.reshape(N, 1)
    else:
        sel = torch.zeros_like(flat, dtype=torch.bool)
        if n > 0:
            sel.scatter_(1, flat.topk(n, dim=1, largest=False).indices, True)
    return sel.reshape(N, 1, H, W)


def mask_lowest(x: torch.Tensor, scores: torch.Tensor, k: float, fill: str = "image",
                low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """`M_k(x, S)`: replace, in every channel, the floor(k*H*W) positions of lowest `scores` (N x H x W)
    of each image by independent uniform values in that image's per-channel [min, max] (fill
    "image") or in [low, high] (fill "fixed"). Detached."""
    if fill not in FILLS:
        raise SgtlabError(f"unknown mask fill {fill!r}; choose one of: {', '.join(FILLS)}")
    if not 0 <= k <= 1:
        raise SgtlabError(f"k must be in [0, 1], got {k}")
    if scores.shape != (x.shape[0], *x.shape[2:]):
        raise SgtlabError(f"saliency of shape {tuple(scores.shape)} does not fit images {tuple(x.shape)}")
    x = x.detach()
    sel = lowest_mask(scores, n_masked(k, x.shape[-2], x.shape[-1]))
    if fill == "image":
        lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    else:
        lo, hi = low, high
    noise = torch.rand_like(x) * (hi - lo) + lo
    return torch.where(sel, noise, x)
