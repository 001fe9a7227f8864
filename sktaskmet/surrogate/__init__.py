"""Task attribution with kernel and linear surrogate models of subset performance."""

from ._distance import ExtrapolationWarning
from ._evaluation import SubsetEvaluationError, SubsetFailure
from ._fine_tuning import SubsetFineTuner
from ._gradient import GradientSubsetEstimator
from ._indicators import ids_to_indicators, indicators_to_ids
from ._kernel import KernelSurrogate
from ._linear import LinearSurrogate
from ._metrics import (
    LOOCorrelationScorer,
    loo_correlation,
    mean_spearman_score,
    mean_spearman_scorer,
    normalized_error,
    normalized_error_scorer,
)
from ._sampling import evaluate_subsets, sample_subsets

__all__ = [
    "KernelSurrogate",
    "LinearSurrogate",
    "evaluate_subsets",
    "SubsetEvaluationError",
    "SubsetFailure",
    "SubsetFineTuner",
    "sample_subsets",
    "GradientSubsetEstimator",
    "mean_spearman_score",
    "normalized_error",
    "loo_correlation",
    "mean_spearman_scorer",
    "normalized_error_scorer",
    "LOOCorrelationScorer",
    "ids_to_indicators",
    "indicators_to_ids",
    "ExtrapolationWarning",
]
