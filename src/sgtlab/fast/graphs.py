"""CUDA graphs for a model's forward and backward: fewer kernel launches per step on a GPU.

A small model (sgt-cnn, batch 128) spends most of a GPU step launching kernels, not running them.
`graphed(model, device)` wraps it in `torch.compile(backend="cudagraphs")`: dynamo captures the
forward, AOT autograd the backward, and each is recorded once per input shape (and per train/eval
mode) as a CUDA graph and then replayed. The replay runs the recorded kernels with the same
arguments, so the numbers are those of eager PyTorch (no fusion, no other kernels: this backend
does not generate code, unlike `mode="reduce-overhead"`, which also runs Inductor).

Written without a GPU to measure it on, so it is an option that is off by default
(`--cuda-graphs`, `robustness_sweep(cuda_graphs=True)`); docs/scale.md says what was and was not
run. Where it does not apply, the model is used as it is:
- not on a CUDA device (on a CPU the backend would only add tracing);
- hooks anywhere in the model (`fast.eligibility`): a hook that keeps a tensor would keep memory
  the next replay overwrites;
- a model already compiled.
Each new batch shape is recorded anew, up to dynamo's recompile limit (then it runs eagerly): a
training run has at most two shapes (the full batch and the last one); the robustness sweep's
batches shrink as images get fooled.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from sgtlab.errors import SgtlabWarning
from sgtlab.fast.eligibility import has_forward_hooks

# the device types the graphs are recorded on; the tests add "cpu", where the backend runs the
# captured graphs eagerly (nothing to record), to check the wrapping against the plain model
DEVICES = ("cuda",)


def graph_ineligible(model: nn.Module, device: torch.device | str) -> str | None:
    """Why `model` on `device` runs without CUDA graphs, or None when it may use them."""
    kind = torch.device(device).type
    if kind not in DEVICES:
        return f"not on a CUDA device ({kind})"
    if isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        return "the model is already compiled"
    if has_forward_hooks(model):
        return "the model has hooks"
    return None


class Graphed(nn.Module):
    """`model` with its forward and backward replayed as CUDA graphs. Parameters, buffers, modes and
    state dict are the wrapped model's (`.module`); the outputs are copied out of the graphs' memory
    pool, so a caller may keep them across steps (the next replay overwrites the pool)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = model
        # dynamic=False: one graph per shape, the shapes of a run are few (see the module doc)
        self._compiled = torch.compile(model, backend="cudagraphs", dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled(x).clone()


def graphed(model: nn.Module, device: torch.device | str, enabled: bool = True) -> nn.Module:
    """`Graphed(model)` when `enabled` and the model may use CUDA graphs on `device`, else `model`
    (with a warning saying why, when they were asked for)."""
    if not enabled:
        return model
    why = graph_ineligible(model, device)
    if why is not None:
        warnings.warn(f"CUDA graphs not used: {why}; running the model as it is", SgtlabWarning, stacklevel=2)
        return model
    return Graphed(model)
