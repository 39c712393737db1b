"""Optional experiment tracking in TensorBoard (`--tensorboard`, `sgtlab.fit(..., tensorboard=True)`):
losses, accuracies, robust accuracies and saliency-map grids go to RUN/tensorboard/, written through
`torch.utils.tensorboard`. The `tensorboard` package is an extra (`pip install "sgtlab[tensorboard]"`);
without it the option fails at once with a one-line error."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sgtlab.errors import SgtlabError

FOLDER = "tensorboard"


def require_tensorboard():
    """torch's SummaryWriter, or a clear error saying how to install tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SgtlabError("--tensorboard needs the optional package tensorboard: "
                          "pip install 'sgtlab[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter


class Tracker:
    """One TensorBoard log in `run/tensorboard`; each method writes one kind of result."""

    def __init__(self, run: str | Path):
        self.folder = Path(run) / FOLDER
        self.writer = require_tensorboard()(log_dir=str(self.folder))

    def epoch(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl: training losses, the learning rate, the test accuracy."""
        step = record["epoch"]
        for k, v in record.get("train", {}).items():
            self.writer.add_scalar(f"train/{k}", v, step)
        self.writer.add_scalar("train/lr", record["lr"], step)
        if record.get("test_accuracy") is not None:
            self.writer.add_scalar("test/accuracy", record["test_accuracy"], step)
        self.writer.flush()

    def robustness(self, robust_accuracy: dict[str, dict[float, float]], clean_accuracy: float) -> None:
        """Robust accuracy per attack as a curve over eps (the x axis is eps in thousandths: TensorBoard
        steps are integers)."""
        for attack, curve in robust_accuracy.items():
            self.writer.add_scalar(f"robust_accuracy/{attack}", clean_accuracy, 0)
            for eps, acc in sorted(curve.items()):
                self.writer.add_scalar(f"robust_accuracy/{attack}", acc, int(round(float(eps) * 1000)))
        self.writer.add_scalar("test/clean_accuracy", clean_accuracy, 0)
        self.writer.flush()

    def saliency(self, name: str, images: Any, maps: dict[str, Any]) -> None:
        """A grid per saliency method: the images on top, their maps (scaled to [0, 1] each) below."""
        imgs = torch.as_tensor(images, dtype=torch.float32)
        for method, m in maps.items():
            m = torch.as_tensor(m, dtype=torch.float32)
            flat = m.reshape(len(m), -1)
            m = (m - flat.min(1).values[:, None, None]) / (flat.max(1).values - flat.min(1).values
                                                           ).clamp_min(1e-12)[:, None, None]
            top = imgs if imgs.shape[1] in (1, 3) else imgs[:, :1]
            maps3 = m[:, None].expand(-1, top.shape[1], -1, -1)
            self.writer.add_images(f"saliency/{name}/{method}", torch.cat([top, maps3]), 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
