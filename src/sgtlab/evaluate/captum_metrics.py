"""captum's infidelity (Yeh et al. 2019) and max-sensitivity (Yeh et al. 2019), one value per image,
through `captum.metrics` with sgtlab's choices of perturbation and a fixed seed.

- `infidelity`: perturbations `I ~ N(0, std^2)` (default std 0.003 x the input range, captum's
  documented example), `E[(I . a - (f_c(x) - f_c(x - I)))^2]` over `n_perturb` samples, with the
  attribution rescaled by the optimal factor (captum's `normalize=True`) so that methods whose maps
  differ only in scale score alike. Lower is more faithful. Needs the raw signed attribution
  (N x C x H x W).
- `sensitivity_max`: the largest change (Frobenius norm) of the map when the input moves uniformly
  in an L-inf ball of radius `radius` (captum's default 0.02), over `n_perturb` samples. Lower is
  more stable. Recomputes the map `n_perturb` times: the costlier of the two.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from sgtlab.errors import SgtlabError


def infidelity(model: nn.Module, x: torch.Tensor, attributions: torch.Tensor, classes: torch.Tensor, *,
               n_perturb: int = 10, std: float = 0.003, seed: int = 0) -> torch.Tensor:
    """captum `infidelity` per image (N) of `attributions` (N x C x H x W, signed) for `classes`."""
    from captum.metrics import infidelity as _infidelity

    if attributions.shape != x.shape:
        raise SgtlabError(f"infidelity needs the raw attribution of the images' shape {tuple(x.shape)}, "
                          f"got {tuple(attributions.shape)}")
    if n_perturb < 1 or not std > 0:
        raise SgtlabError(f"infidelity needs n_perturb >= 1 and std > 0, got {n_perturb}, {std}")
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def perturb(inputs):
        noise = (torch.randn(inputs.shape, generator=gen) * std).to(inputs.device, inputs.dtype)
        return noise, inputs - noise

    from sgtlab.evaluate.perturb import evaluating

    with evaluating(model):
        with torch.no_grad():  # inside: `evaluating` turns grad mode on
            return _infidelity(model, perturb, x, attributions, target=classes, n_perturb_samples=n_perturb,
                               normalize=True).detach().cpu()


def sensitivity_max(explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                    classes: torch.Tensor, *, n_perturb: int = 10, radius: float = 0.02, seed: int = 0) -> torch.Tensor:
    """captum `sensitivity_max` per image (N) of `explain(x, classes) -> maps` (any shape per image)."""
    from captum.metrics import sensitivity_max as _sensitivity_max

    if n_perturb < 1 or not radius > 0:
        raise SgtlabError(f"sensitivity_max needs n_perturb >= 1 and radius > 0, got {n_perturb}, {radius}")
    with torch.random.fork_rng(devices=[]):  # captum draws the perturbations from the global RNG
        torch.manual_seed(seed)
        # captum hands the inputs over as a 1-tuple and wants a tuple back
        fn = lambda inp, target: (explain(inp[0] if isinstance(inp, tuple) else inp, target),)  # noqa: E731
        return _sensitivity_max(fn, x, perturb_radius=radius,
                                n_perturb_samples=n_perturb, target=classes).detach().cpu()
