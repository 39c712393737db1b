"""Saliency maps by name, through captum: `grad`, `input-x-grad`, `smoothgrad`, `ig`; and any captum
attribution (class, object or dotted name) or a callable `(model, x, target) -> maps`
(`sgtlab.explain.custom`).

    maps = saliency_maps(model, x, y, "smoothgrad", samples=10)   # N x H x W, |s| summed over channels
"""
from sgtlab.explain.base import (SALIENCY, prepared, register_saliency, saliency_maps, saliency_method,
                                 saliency_names)

# Importing the modules registers the methods.
from sgtlab.explain import grad, input_x_grad, smoothgrad, ig  # noqa: E402,F401

__all__ = ["SALIENCY", "prepared", "register_saliency", "saliency_maps", "saliency_method", "saliency_names"]
