from __future__ import annotations

import torch
from torch import nn

from sgtlab.data.base import TensorData


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels, in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        preds = [model(x[i:i + batch_size].to(device)).argmax(1) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=device)


def accuracy(model: nn.Module, data: TensorData, batch_size: int = 1000) -> float:
    """Clean accuracy; uint8 data is converted to float batch by batch (never the whole split)."""
    if data.pixels.is_floating_point():
        pred = predict(model, data.x, batch_size)
    else:
        device = next(model.parameters()).device
        pred = torch.cat([predict(model, data.batch(slice(i, i + batch_size), device), batch_size)
                          for i in range(0, len(data), batch_size)] or [torch.empty(0, dtype=torch.long)])
    return (pred.cpu() == data.y).float().mean().item()
