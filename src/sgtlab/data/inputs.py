"""The one reader of data arguments: every public function that takes data accepts `(x, y)`
tensors, a `TensorDataset`, a `DataLoader` (read once into memory) or a `TensorData`, and checks
it here, before any work, with a one-line error that says what is wrong and how to fix it.

Checked: images a float tensor N x C x H x W with values in [0, 1] (no NaN), labels an integer
tensor of N values, and, when the number of classes is known (the model's output width), labels in
[0, classes). The checks cost one min/max reduction over the images and one over the labels.
"""
from __future__ import annotations

from typing import Any

import torch

from sgtlab.data.base import TensorData
from sgtlab.errors import SgtlabError

HINT = "give (x, y) tensors, a TensorDataset or a DataLoader"


def _pairs_from_loader(loader, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for batch in loader:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise SgtlabError(f"{what}: each batch of the DataLoader must be (images, labels), "
                              f"got {type(batch).__name__}")
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise SgtlabError(f"{what}: the DataLoader is empty")
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError as e:
        raise SgtlabError(f"{what}: the DataLoader's batches do not stack ({str(e).splitlines()[0]})") from None


def _unpack(data: Any, what: str) -> tuple[Any, Any, str, dict]:
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    if isinstance(data, TensorData):
        return data.x, data.y, data.name, dict(data.extras)
    if isinstance(data, TensorDataset):
        if len(data.tensors) < 2:
            raise SgtlabError(f"{what}: the TensorDataset must hold (images, labels), got "
                              f"{len(data.tensors)} tensor(s)")
        return data.tensors[0], data.tensors[1], "", {}
    if isinstance(data, DataLoader):
        x, y = _pairs_from_loader(data, what)
        return x, y, "", {}
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise SgtlabError(f"{what}: expected a pair (x, y), got a {type(data).__name__} of {len(data)} items; "
                              f"{HINT}")
        return data[0], data[1], "", {}
    if isinstance(data, Dataset):
        raise SgtlabError(f"{what}: a {type(data).__name__} is read through a DataLoader: pass "
                          f"DataLoader(dataset, batch_size=256) or (x, y) tensors")
    raise SgtlabError(f"{what}: cannot read a {type(data).__name__} as data; {HINT}")


def check_images(x: Any, what: str = "images") -> None:
    if not isinstance(x, torch.Tensor):
        raise SgtlabError(f"{what} must be a torch tensor N x C x H x W, got {type(x).__name__}")
    if x.ndim != 4:
        hint = " (add the channel axis: x.unsqueeze(1))" if x.ndim == 3 else ""
        raise SgtlabError(f"{what} must be N x C x H x W, got shape {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise SgtlabError(f"{what} must be a float tensor in [0, 1], got {x.dtype} (divide uint8 pixels by 255)")


def as_data(data: Any, *, what: str = "data", num_classes: int | None = None,
            shape: tuple[int, ...] | None = None) -> TensorData:
    """`data` as a checked `TensorData` (the images as float32). `num_classes`: labels must lie in
    [0, num_classes); `shape`: the C x H x W every image must have (e.g. the training images')."""
    if isinstance(data, TensorData) and not data.pixels.is_floating_point():
        return _checked_uint8(data, what, num_classes, shape)  # never converts the whole split
    x, y, name, extras = _unpack(data, what)
    check_images(x, f"{what}: images")
    if not isinstance(y, torch.Tensor):
        raise SgtlabError(f"{what}: labels must be a torch tensor of {len(x)} class indices, got {type(y).__name__}")
    if y.ndim != 1 or len(y) != len(x):
        hint = " (one-hot labels? use y.argmax(1))" if y.ndim == 2 and len(y) == len(x) else ""
        raise SgtlabError(f"{what}: labels must have shape ({len(x)},) for {len(x)} images, "
                          f"got {tuple(y.shape)}{hint}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise SgtlabError(f"{what}: labels must be integer class indices, got {y.dtype} (use y.long())")
    if len(x) == 0:
        raise SgtlabError(f"{what}: no samples")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise SgtlabError(f"{what}: images of shape {tuple(x.shape[1:])}, expected {tuple(shape)}")
    lo, hi = torch.aminmax(x.detach())
    ylo, yhi = torch.aminmax(y.detach())
    lo, hi, ylo, yhi = torch.stack([lo.double().cpu(), hi.double().cpu(), ylo.double().cpu(),
                                    yhi.double().cpu()]).tolist()
    if not (0.0 <= lo and hi <= 1.0):  # also rejects NaN
        raise SgtlabError(f"{what}: images must lie in [0, 1] (normalise inside the model), got values in "
                          f"[{lo:.4g}, {hi:.4g}]")
    if ylo < 0 or (num_classes is not None and yhi >= num_classes):
        top = f"[0, {num_classes - 1}]" if num_classes is not None else ">= 0"
        raise SgtlabError(f"{what}: labels must be class indices {top}, got values in [{ylo:g}, {yhi:g}]")
    return TensorData(x.detach().float(), y.detach().long(), name or what, extras)


def _checked_uint8(data: TensorData, what: str, num_classes: int | None,
                   shape: tuple[int, ...] | None) -> TensorData:
    """uint8 pixels are in [0, 1] once converted by construction: only labels and shape to check."""
    if len(data) == 0:
        raise SgtlabError(f"{what}: no samples")
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise SgtlabError(f"{what}: images of shape {tuple(data.shape)}, expected {tuple(shape)}")
    if data.y.dtype.is_floating_point or data.y.dtype == torch.bool:
        raise SgtlabError(f"{what}: labels must be integer class indices, got {data.y.dtype} (use y.long())")
    ylo, yhi = (int(v) for v in torch.aminmax(data.y))
    if ylo < 0 or (num_classes is not None and yhi >= num_classes):
        top = f"[0, {num_classes - 1}]" if num_classes is not None else ">= 0"
        raise SgtlabError(f"{what}: labels must be class indices {top}, got values in [{ylo}, {yhi}]")
    return data


def output_classes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """The model's number of outputs, from one image (no gradient, eval mode, modes restored);
    a one-line error when the model does not take these images or gives no N x K logits."""
    from sgtlab.device import eval_mode, model_device

    try:
        with torch.no_grad(), eval_mode(model):
            out = model(x[:1].to(model_device(model)))
    except (RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SgtlabError(f"the model does not take images of shape {tuple(x.shape[1:])}: {first}") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise SgtlabError(f"the model must return logits N x classes, got "
                          f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return int(out.shape[1])


def model_data(model: torch.nn.Module, data: Any, what: str = "data") -> TensorData:
    """`as_data` with the label range taken from the model's output width."""
    d = as_data(data, what=what)
    k = output_classes(model, d.batch(slice(0, 1)))
    check_labels(d.y, k, what)
    return d


def check_labels(y: torch.Tensor, num_classes: int, what: str = "data") -> None:
    top = int(y.max()) if len(y) else -1
    if top >= num_classes:
        raise SgtlabError(f"{what}: labels must be class indices [0, {num_classes - 1}] (the model has "
                          f"{num_classes} outputs), got a label {top}")
