"""Batch augmentation for CIFAR-10: random crop with 4-pixel zero padding and horizontal flip.

Written by hand because torchvision is not a dependency and its v2 transforms draw one crop for
the whole batch; here every sample gets its own offset and flip in one gather, no Python loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAD = 4


def crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """x: N x C x H x W. Each sample: zero-pad by `pad`, crop H x W at a uniform offset in
    [0, 2*pad]^2, flip left-right with probability 1/2. Random draws come from `g` (a CPU
    generator, so results do not depend on the device of `x`)."""
    n, c, h, w = x.shape
    oy, ox = torch.randint(0, 2 * pad + 1, (2, n, 1), generator=g).to(x.device)
    flip = (torch.rand(n, 1, generator=g) < 0.5).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = oy + torch.arange(h, device=x.device)  # N x H
    cols = ox + torch.arange(w, device=x.device)  # N x W
    cols = torch.where(flip, cols.flip(1), cols)
    # one gather on flat pixel indices: ~3x faster on CPU than 4-d advanced indexing
    idx = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, idx).view(n, c, h, w)
