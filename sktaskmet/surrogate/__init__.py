"""Task attribution with kernel and linear surrogate models of subset performance."""

from ._gradient import GradientSubsetEstimator

__all__ = ["GradientSubsetEstimator"]
