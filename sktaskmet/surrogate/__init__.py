"""Task attribution with kernel and linear surrogate models of subset performance."""

from ._evaluation import SubsetEvaluationError, SubsetFailure
from ._gradient import GradientSubsetEstimator
from ._kernel import KernelSurrogate
from ._linear import LinearSurrogate
from ._sampling import evaluate_subsets, sample_subsets

__all__ = [
    "KernelSurrogate",
    "LinearSurrogate",
    "evaluate_subsets",
    "SubsetEvaluationError",
    "SubsetFailure",
    "sample_subsets",
    "GradientSubsetEstimator",
]
