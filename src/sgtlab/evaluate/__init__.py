"""Evaluation: clean accuracy here; robustness and interpretability in their own modules."""
from sgtlab.evaluate.accuracy import accuracy, predict

__all__ = ["accuracy", "predict"]
