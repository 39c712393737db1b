from __future__ import annotations

import torch
from torch import nn

from sgtlab.data.base import TensorData
from sgtlab.device import eval_mode, model_device


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels, in eval mode (every submodule's own mode is restored afterwards)."""
    device = model_device(model)
    with eval_mode(model):
        preds = [model(x[i:i + batch_size].to(device)).argmax(1) for i in range(0, len(x), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=device)


def accuracy(model: nn.Module, data: TensorData, batch_size: int = 1000) -> float:
    """Clean accuracy; uint8 data is converted to float batch by batch (never the whole split)."""
    if data.pixels.is_floating_point():
        pred = predict(model, data.x, batch_size)
    else:
        device = model_device(model)
        pred = torch.cat([predict(model, data.batch(slice(i, i + batch_size), device), batch_size)
                          for i in range(0, len(data), batch_size)] or [torch.empty(0, dtype=torch.long)])
    return (pred.cpu() == data.y.cpu()).float().mean().item()
