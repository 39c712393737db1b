"""Layers PyTorch has but runs slowly on a CPU, as drop-in subclasses (same parameters, same
state dict, `isinstance` of the PyTorch class holds)."""
from __future__ import annotations

import functools

import torch
from torch import nn

from sgtlab.models.hooks import global_forward_hooks, module_has_forward_hooks


def strided_max_pool(t: torch.Tensor, k: tuple[int, int]) -> torch.Tensor:
    """Max-pool of N x C x H x W with kernel = stride `k`, no padding, floor mode: the element-wise
    maximum of the kernel's strided views. The same values as `F.max_pool2d` (NaN included), and on
    a CPU 10-18x faster than its N x C x H x W kernel, a scalar loop that also records the indices
    a backward pass would need."""
    h, w = t.shape[2] // k[0] * k[0], t.shape[3] // k[1] * k[1]
    rows = functools.reduce(torch.maximum, [t[:, :, i:h:k[0], :w] for i in range(k[0])])
    return functools.reduce(torch.maximum, [rows[:, :, :, j::k[1]] for j in range(k[1])])


def pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def is_strided_pool(m: nn.MaxPool2d) -> bool:
    """True when `strided_max_pool` computes `m`: kernel = stride, no padding or dilation, floor mode."""
    return (pair(m.kernel_size) == pair(m.stride) and pair(m.padding) == (0, 0) and pair(m.dilation) == (1, 1)
            and not m.ceil_mode and not m.return_indices)


def _hooked(m: nn.Module) -> bool:
    """The fast paths' one hook check (`sgtlab.models.hooks`, shared with `sgtlab.fast.eligibility`)
    for this layer: its own hooks and global ones. The strided maximum gives the same values either way (hooks run in `__call__`,
    around this forward); a hooked layer takes PyTorch's path so every fast path refuses alike."""
    return module_has_forward_hooks(m) or global_forward_hooks()


class _MaxPoolViaChannelsLast(torch.autograd.Function):
    """PyTorch's max-pool with indices, run on a channels-last copy of a contiguous input; the
    backward is PyTorch's max-pool backward on contiguous tensors (the same op autograd calls).

    Why: on a CPU the channels-last forward kernel is vectorised over channels, the contiguous one
    is a scalar loop (sgt-cnn's pool, 128 x 64 x 24 x 24 on 2 threads: 4 ms instead of 14 ms,
    the copy included), while for the backward it is the other way round (2.5 ms contiguous,
    13 ms channels-last). Both kernels pick the same maximum in each window (the first one; a NaN
    wins), so the values, the indices and the gradient are PyTorch's, bit for bit. The backward is
    itself differentiable (PyTorch's double-backward formula applies)."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        out, idx = torch.ops.aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last),
                                                          kernel_size, stride, padding, dilation, ceil_mode)
        idx = idx.contiguous()
        ctx.save_for_backward(x, idx)
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        return out.contiguous()

    @staticmethod
    def backward(ctx, g):
        x, idx = ctx.saved_tensors
        gx = torch.ops.aten.max_pool2d_with_indices_backward(g.contiguous(), x, *ctx.args, idx)
        return gx, None, None, None, None, None


class MaxPool2d(nn.MaxPool2d):
    """`nn.MaxPool2d` with faster forwards on a CPU (same values, same gradients).

    Without a gradient: `strided_max_pool`. On 128 x 64 x 24 x 24 (sgt-cnn's pool on a batch of
    128) PyTorch's CPU max-pool takes 9 ms, as long as the convolution before it; the strided maximum
    takes 0.5 ms, which makes a no-grad sgt-cnn forward 1.7x faster (evaluation, the attacks'
    checks, the saliency metrics). With a gradient (training, attack steps, saliency), on a
    contiguous input: `_MaxPoolViaChannelsLast`, PyTorch's own kernels in their fast layouts (a
    maximum of views would pass gradient to every tied maximum, and its backward costs more)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.ndim != 4 or self.return_indices or _hooked(self):
            return super().forward(x)
        if not (x.requires_grad and torch.is_grad_enabled()):
            if is_strided_pool(self):
                return strided_max_pool(x, pair(self.kernel_size))
            return super().forward(x)
        if x.is_contiguous() and x.shape[1] > 1:  # one channel: both layouts are the same, no gain
            # (nn.MaxPool2d has already set a stride left as None to the kernel size)
            return _MaxPoolViaChannelsLast.apply(x, pair(self.kernel_size), pair(self.stride), pair(self.padding),
                                                 pair(self.dilation), self.ceil_mode)
        return super().forward(x)
