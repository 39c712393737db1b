"""sgtlab: saliency-guided training, adversarial robustness and saliency quality, in one tool.

The Python API (see docs/python.md), on your own `nn.Module` (inputs in [0, 1], normalisation
inside the model) and data given as `(x, y)` tensors, a `TensorDataset` or a `DataLoader`:

    fit(model, train, test=None, method="st", epochs=5, out=None, **options)   train (a run folder)
    train_step(model, x, y, optimizer, method="sgt", **options)                one step, your loop
    load_model(run_or_checkpoint, model=None)                                  a trained model
    robustness(model, data, eps, attacks=("fgsm", "pgd", "mifgsm"))            robust accuracy
    saliency_maps(model, x, y=None, method="grad")                             saliency maps
    saliency_metrics(model, data, methods=("grad",), metrics="all")            saliency quality
    report(runs, out)                                                          the experiment report
    benchmark(model, dataset, threat_model="Linf", eps=None, n=1000)           RobustBench-style, as JSON
    list_models(), list_datasets(), list_methods(), list_attacks()            registered names

Attacks as torchattacks objects: `sgtlab.attacks.PGD(model, eps=8/255)(x, y)`. The functions are
imported on first use, so `import sgtlab` stays fast.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "fit": "sgtlab.api.train", "train_step": "sgtlab.api.train",
    "load_model": "sgtlab.api.models", "list_models": "sgtlab.api.models", "list_datasets": "sgtlab.api.models",
    "list_methods": "sgtlab.api.models", "list_attacks": "sgtlab.api.models",
    "robustness": "sgtlab.api.evaluate", "saliency_maps": "sgtlab.api.evaluate",
    "saliency_metrics": "sgtlab.api.evaluate", "report": "sgtlab.api.report", "benchmark": "sgtlab.api.benchmark",
    "SgtlabError": "sgtlab.errors",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in ("attacks", "data", "models", "train", "evaluate", "explain", "experiments", "device", "plugins"):
        return importlib.import_module(f"sgtlab.{name}")
    raise AttributeError(f"module 'sgtlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
