"""AOPC by local recomputation: the exact probabilities of `aopc`'s perturbed images at a fraction
of the work, for models that start with local layers.

Why by hand: consecutive AOPC steps differ by one patch, and a convolution, a point-wise layer or a
max-pool changes its output only in a small window around a changed input. For a `Sequential`
model whose leading layers are of those kinds (sgt-cnn: normalisation, conv, ReLU, conv, ReLU,
max-pool; alexnet-mnist), each step recomputes, for all images at once, only the window each
layer's output changes in (sgt-cnn: 4x4 of conv1's 26x26, 6x6 of conv2's 24x24), keeps every
layer's output between steps, and updates a first Linear after them from the changed inputs alone
(see `aopc_probs_local`); the layers after it run in full. On a CPU this is over ten times less
work than a forward of every perturbed image, which batching alone cannot make up for there (a
batched forward of sgt-cnn costs a third of a one-image forward).
Same numbers up to float rounding (tested against the plain path to 1e-5). A model with a forward
hook or pre-hook anywhere (or a global one) is refused (`sgtlab.fast.eligibility`): the layers run
here by hand would skip it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sgtlab.fast.eligibility import has_forward_hooks
from sgtlab.models.layers import MaxPool2d, is_strided_pool, pair, strided_max_pool

# (kind, module): kind is "point" (output pixel depends on the same input pixel), "conv" or "pool"
Plan = list[tuple[str, nn.Module]]

POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Identity)


def _kind(m: nn.Module) -> str | None:
    from sgtlab.models.base import Normalize

    if type(m) in POINTWISE or type(m) is Normalize:
        return "point"
    if type(m) in (nn.Dropout, nn.Dropout2d) and not m.training:
        return "point"
    if type(m) is nn.BatchNorm2d and not m.training and m.track_running_stats:
        return "point"  # eval-mode batch-norm is a per-channel affine map
    if (type(m) is nn.Conv2d and pair(m.stride) == (1, 1) and pair(m.dilation) == (1, 1)
            and m.padding_mode == "zeros" and not isinstance(m.padding, str)):
        return "conv"
    if type(m) in (nn.MaxPool2d, MaxPool2d) and is_strided_pool(m):
        return "pool"
    return None


def local_plan(model: nn.Module) -> tuple[Plan, list[nn.Module]] | None:
    """(the model's leading local layers, the rest), or None when the model is not a (nested)
    `Sequential` starting with a convolution or max-pool after point-wise layers, or has a forward
    hook or pre-hook (which running its layers by hand would skip)."""
    from sgtlab.saliency import _leaves

    if has_forward_hooks(model):
        return None
    leaves = _leaves(model)
    if not leaves:
        return None
    plan: Plan = []
    for m in leaves:
        kind = _kind(m)
        if kind is None:
            break
        plan.append((kind, m))
    if not any(k != "point" for k, _ in plan):
        return None
    return plan, leaves[len(plan):]


def _out_window(kind: str, m: nn.Module, start: torch.Tensor, length: int, size_out: int,
                axis: int) -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """For a change in input rows [start, start + length) (per image), the output window
    (start, length) that holds every changed output, and the input window (start, length) it is
    computed from. Windows are clamped into range, so every image's window has the same length."""
    if kind in ("point", "none"):
        return start, length, start, length
    if kind == "conv":
        k, p = pair(m.kernel_size)[axis], pair(m.padding)[axis]
        lo = min(size_out, length + k - 1)
        o = (start + p - (k - 1)).clamp(0, size_out - lo)
        return o, lo, o - p, lo + k - 1
    s = pair(m.kernel_size)[axis]  # pool
    lo = min(size_out, math.ceil((length - 1) / s) + 1)
    o = torch.div(start, s, rounding_mode="floor").clamp(0, size_out - lo)
    return o, lo, o * s, lo * s


def _index(start: torch.Tensor, length: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = start[:, None] + torch.arange(length, device=start.device)
    return idx.clamp(0, limit - 1), (idx >= 0) & (idx < limit)


def _rows(t: torch.Tensor, ri: torch.Tensor, ci: torch.Tensor) -> torch.Tensor:
    """The rows of `t.view(-1, C)` (`t`: N x H x W x C) of each image's window rows `ri` x
    columns `ci`, flat (N*lr*lc)."""
    n, h, w, _ = t.shape
    base = torch.arange(n, device=t.device).mul_(h * w)
    return (base[:, None, None] + ri[:, :, None] * w + ci[:, None, :]).flatten()


def _stages(plan: Plan) -> list[tuple[list[nn.Module], str, nn.Module | None, list[nn.Module]]]:
    """The plan as stages (point-wise layers before, a conv or pool or nothing, point-wise layers
    after): one window gather and one scatter per stage instead of per layer."""
    stages, pre = [], []
    for kind, m in plan:
        if kind == "point":
            (stages[-1][3] if stages and not pre and stages[-1][1] != "none" else pre).append(m)
        else:
            stages.append((pre, kind, m, []))
            pre = []
    if pre:
        stages.append((pre, "none", None, []))
    return stages


def _linear_head(rest: list[nn.Module]) -> tuple[nn.Linear, list[nn.Module]] | None:
    """(the Linear, the layers after it) when the rest of the model starts with Flatten, eval-mode
    dropouts and a Linear: its output then changes by the weights of the changed inputs alone."""
    if not rest or type(rest[0]) is not nn.Flatten or (rest[0].start_dim, rest[0].end_dim) != (1, -1):
        return None
    i = 1
    while i < len(rest) and (type(rest[i]) is nn.Identity or (type(rest[i]) is nn.Dropout and not rest[i].training)):
        i += 1
    return (rest[i], rest[i + 1:]) if i < len(rest) and type(rest[i]) is nn.Linear else None


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).contiguous()  # no copy when `t` is channels-last already


def _nchw(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)  # a view: the layers see N x C x H x W with channels-last strides


def aopc_probs_local(plan: Plan, rest: list[nn.Module], x: torch.Tensor, fill: torch.Tensor,
                     ranks_pix: torch.Tensor, pix_patch: torch.Tensor, gw: int, patch: int, steps: int
                     ) -> torch.Tensor:
    """Softmax probabilities (N x steps+1 x classes) of the images `aopc` builds: step k has the
    pixels of the k patches of lowest rank replaced by `fill`. `ranks_pix` (N x H*W): each pixel's
    patch rank; `pix_patch`: each pixel's patch index, `gw` patches per row of `patch` px.

    Every kept tensor is N x H x W x C, so that a window is a set of whole rows of its
    (N*H*W) x C view: `index_select` / `index_copy_` of rows are 10-15x faster on a CPU than
    `gather` / `scatter_` of single elements of N x C x H x W, and the convolutions run
    channels-last. When a Linear follows (sgt-cnn, alexnet-mnist), its output is kept too and moved
    by `embedding_bag` over the changed inputs' weight rows (a sparse-dense product, 5x faster
    than the Linear on the whole input)."""
    with torch.no_grad():  # not a decorator: mutmut 3 skips decorated functions
        n, c, h, w = x.shape
        stages = _stages(plan)
        linear = _linear_head(rest)
        tail = linear[1] if linear else rest
        inplace = any(getattr(m, "inplace", False) for m in tail)

        def finish(t: torch.Tensor) -> torch.Tensor:
            t = t.clone() if inplace else t  # the kept tensor must survive an in-place layer
            for m in tail:
                t = m(t)
            return F.softmax(t, 1)

        def run(pre, kind, core, post, t, outside=None, window=True):
            for m in pre:
                t = m(t)
            if kind == "conv":  # a window carries its padding: zeros where it lies outside the input
                t = F.conv2d(t if outside is None else t.masked_fill(outside, 0.0), core.weight, core.bias,
                             padding=0 if window else core.padding, groups=core.groups)
            elif kind == "pool":
                t = strided_max_pool(t, pair(core.kernel_size))
            for m in post:
                t = m(t)
            return t

        caches, t = [], x
        for stage in stages:  # step 0: the clean images; each stage's output kept (no aliasing)
            t = run(*stage, t.clone(), window=False)
            caches.append(_nhwc(t))
        if linear:
            lin = linear[0]
            z = lin(t.flatten(1))  # a Linear of the wrong size fails here as in the model's own forward
            fc, fh, fw = t.shape[1:]
            # the Linear's weight rows in the kept tensor's (h, w, c) order: a table for `embedding_bag`
            table = lin.weight.view(-1, fc, fh, fw).permute(2, 3, 1, 0).reshape(fh * fw * fc, -1).contiguous()
            probs = [finish(z)]
        else:
            probs = [finish(_nchw(caches[-1]))]
        cur = _nhwc(x)
        fill = _nhwc(fill)
        changed_at = ranks_pix.view(n, h, w, 1)
        base = torch.arange(n, device=x.device)
        # the patch each image replaces at each step, from the pixel ranks
        patch_of_rank = torch.empty((n, gw * math.ceil(h / patch)), dtype=torch.long, device=x.device)
        patch_of_rank.scatter_(1, ranks_pix, pix_patch.expand(n, -1))
        for k in range(1, steps + 1):
            q = patch_of_rank[:, k - 1]
            r0 = (torch.div(q, gw, rounding_mode="floor") * patch).clamp(max=max(0, h - patch))
            c0 = (q % gw * patch).clamp(max=max(0, w - patch))
            cur = torch.where(changed_at == k - 1, fill, cur)
            prev, lr, lc = cur, min(patch, h), min(patch, w)
            for (pre, kind, core, post), out in zip(stages, caches):
                ro, lor, ri, lir = _out_window(kind, core, r0, lr, out.shape[1], 0)
                co, loc, ci, lic = _out_window(kind, core, c0, lc, out.shape[2], 1)
                ri, rv = _index(ri, lir, prev.shape[1])
                ci, cv = _index(ci, lic, prev.shape[2])
                window = prev.view(-1, prev.shape[3]).index_select(0, _rows(prev, ri, ci))
                outside = None
                if kind == "conv" and any(pair(core.padding)):
                    outside = ~(rv[:, None, :, None] & cv[:, None, None, :])
                new = _nhwc(run(pre, kind, core, post, _nchw(window.view(n, lir, lic, -1)), outside))
                rows = _rows(out, ro[:, None] + torch.arange(lor, device=x.device),
                             co[:, None] + torch.arange(loc, device=x.device))
                flat = out.view(-1, out.shape[3])
                old = flat.index_select(0, rows) if linear and out is caches[-1] else None
                flat.index_copy_(0, rows, new.view(-1, out.shape[3]))
                prev, r0, c0, lr, lc = out, ro, co, lor, loc
            if linear:
                cols = (((rows.view(n, -1) - base[:, None] * (fh * fw)) * fc)[:, :, None]
                        + torch.arange(fc, device=x.device))
                z = z + F.embedding_bag(cols.view(n, -1), table, per_sample_weights=(new.view(n, -1) - old.view(n, -1)),
                                        mode="sum")
                probs.append(finish(z))
            else:
                probs.append(finish(_nchw(caches[-1])))
        return torch.stack(probs, 1).flatten(2)  # outputs of more dims as the plain path's view: N x steps+1 x -1
