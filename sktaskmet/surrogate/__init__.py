"""Task attribution with kernel and linear surrogate models of subset performance."""

from ._sampling import evaluate_subsets, sample_subsets

__all__ = ["evaluate_subsets", "sample_subsets"]
