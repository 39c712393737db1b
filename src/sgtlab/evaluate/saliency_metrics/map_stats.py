"""Statistics of a map alone: entropy, Gini index, compressed size, localisation share."""
from __future__ import annotations

import zlib

import torch

from sgtlab.errors import SgtlabError


def check_maps(maps: torch.Tensor, name: str = "maps") -> None:
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3 or not maps.is_floating_point():
        raise SgtlabError(f"{name} must be a float tensor N x H x W, got {getattr(maps, 'shape', type(maps).__name__)}")


def saliency_entropy(maps: torch.Tensor) -> torch.Tensor:
    """Bhatt et al. 2020 (quantus `Complexity`): `p = |s| / sum |s|`, `H = -sum p ln(p + 1e-12)`,
    nats, in `[0, ln(H*W)]`. An all-zero map has no distribution: NaN."""
    check_maps(maps)
    a = maps.abs().flatten(1).double()
    p = a / a.sum(1, keepdim=True)
    return -(p * torch.log(p + 1e-12)).sum(1).float()


def saliency_gini(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of `|s|` (Chalasani et al. 2020; quantus `Sparseness`): sorted ascending,
    `G = sum_i (2i - n - 1) a_(i) / (n sum a)`; 0 for a uniform map, `1 - 1/n` for a one-hot one.
    An all-zero map: NaN."""
    check_maps(maps)
    a = maps.abs().flatten(1).double().sort(1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
    return (((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))).float()


def saliency_size(maps: torch.Tensor) -> torch.Tensor:
    """`|s|` min-max scaled per image to [0, 255], rounded to uint8 (row-major H x W bytes), then the
    length of `zlib.compress(level=9)` in KiB. A constant map scales to all zeros."""
    check_maps(maps)
    a = maps.abs().flatten(1).double()
    lo, hi = a.amin(1, keepdim=True), a.amax(1, keepdim=True)
    scaled = ((a - lo) / (hi - lo).clamp_min(1e-300) * 255).round().to(torch.uint8).cpu().numpy()
    # zlib works on one buffer at a time: one call per image (cheap next to any model call).
    return torch.tensor([len(zlib.compress(row.tobytes(), 9)) / 1024 for row in scaled])


def localisation(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Share of the saliency mass `sum |s|` that lies inside `region` (N x H x W bool), per image
    (Decoy-MNIST: the decoy patch, the digit). An all-zero map: NaN."""
    check_maps(maps)
    if not isinstance(region, torch.Tensor) or tuple(region.shape) != tuple(maps.shape):
        raise SgtlabError(f"the region mask must be N x H x W like the maps {tuple(maps.shape)}, "
                          f"got {getattr(region, 'shape', type(region).__name__)}")
    a = maps.abs().flatten(1).double()
    inside = (a * region.to(a.device).flatten(1).to(a.dtype)).sum(1)
    return (inside / a.sum(1)).float()
