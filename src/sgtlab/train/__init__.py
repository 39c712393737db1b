"""Training: a loop that takes a *method* (a registered function returning the loss of a batch)."""
from sgtlab.train.config import TrainConfig
from sgtlab.train.methods import METHODS, MethodConfig, StepContext, register_method
from sgtlab.train.loop import fit

__all__ = ["METHODS", "MethodConfig", "StepContext", "TrainConfig", "fit", "register_method"]
