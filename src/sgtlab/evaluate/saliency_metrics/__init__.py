"""Saliency-metric definitions as small formulas of maps and model outputs, one module per family
(SPEC.md "Saliency maps and their quality"). Model calls and perturbed copies of the images are
made elsewhere (`sgtlab.evaluate.perturb` and the metric runners); these functions only turn maps,
probabilities and correctness into numbers, one per image."""
from sgtlab.evaluate.saliency_metrics.faithfulness import (abpc, aopc_from_probs, clearly_positive, drop_from_probs,
                                                           ratio_where_defined)
from sgtlab.evaluate.saliency_metrics.map_stats import (check_maps, localisation, saliency_entropy, saliency_gini,
                                                        saliency_size)
from sgtlab.evaluate.saliency_metrics.similarity import rank_average, spearman_abs, ssim

__all__ = ["abpc", "aopc_from_probs", "check_maps", "clearly_positive", "drop_from_probs", "localisation",
           "rank_average", "ratio_where_defined", "saliency_entropy", "saliency_gini", "saliency_size",
           "spearman_abs", "ssim"]
