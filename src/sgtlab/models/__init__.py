"""Models by name. Each takes images in [0, 1]; normalisation is the model's first layer, so
attack budgets are in pixel units."""
from sgtlab.models.base import MODELS, Normalize, build_model, register_model
from sgtlab.models import alexnet, resnet, sgt_cnn, vit  # noqa: F401  (registers the models)

__all__ = ["MODELS", "Normalize", "build_model", "register_model"]
