"""A small vision transformer (Dosovitskiy et al. 2021), as the SGT-robustness audit's "tiny
transformer": patch embedding (a strided convolution), a class token, learned position
embeddings, pre-norm encoder blocks (`nn.TransformerEncoderLayer`), a LayerNorm and a linear head
on the class token. Written with torch's own layers only.

Sizes: 192 wide, 6 blocks of 3 heads, MLP 384 (ViT-Tiny's width at half its depth and MLP). The
patch follows the input: 4 px up to 32 px (28 px: 7x7 patches; 32 px: 8x8), 8 px up to 96 px
(64 px: 8x8; PCAM's 96 px: 12x12), 16 px above (224 px: 14x14 as ViT-B/16). The position
embeddings fix the size the model was built for (`input_size`, default 32x32).
"""
from __future__ import annotations

import torch
from torch import nn

from sgtlab.models.base import check_size, register_model

SIZES = ("square images of 16 to 32 px in steps of 4 (patch 4), 40 to 96 px in steps of 8 (patch 8), "
         "112 to 384 px in steps of 16 (patch 16)")


def patch_for(size: int) -> int:
    return 4 if size <= 32 else 8 if size <= 96 else 16


def _ok(h: int, w: int) -> bool:
    return h == w and 16 <= h <= 384 and h % patch_for(h) == 0


class ViT(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, size: int, dim: int = 192, depth: int = 6,
                 heads: int = 3, mlp: int = 384, dropout: float = 0.0):
        super().__init__()
        patch = patch_for(size)
        self.patch = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, (size // patch) ** 2 + 1, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        # enable_nested_tensor only matters with padding masks (none here); off avoids its warning
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # N x tokens x dim
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.encoder(t)[:, 0]))


@register_model("vit-tiny")
def vit_tiny(in_channels: int = 3, num_classes: int = 10, input_size=(32, 32)) -> nn.Module:
    h, w = check_size("vit-tiny", input_size, _ok, SIZES)
    body = ViT(in_channels, num_classes, h)
    body.input_size, body.sizes = (h, w), SIZES
    return body
