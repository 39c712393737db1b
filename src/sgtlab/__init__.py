"""sgtlab: saliency-guided training, adversarial robustness and saliency quality, in one tool."""

__version__ = "0.1.0"
