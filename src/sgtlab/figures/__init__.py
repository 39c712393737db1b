"""Pictures (matplotlib, Agg canvas, PNG and PDF) drawn from plain arrays and saved results."""
from sgtlab.figures.interpretability import (aopc_plot, entropy_plot, interpretability_figures, low_saliency_plot,
                                             masked_accuracy_plot, road_plot, saliency_grid, sanity_plot)

__all__ = ["aopc_plot", "entropy_plot", "interpretability_figures", "low_saliency_plot", "masked_accuracy_plot",
           "road_plot", "saliency_grid", "sanity_plot"]
