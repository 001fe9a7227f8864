"""Sparse compositional metric learning (global and local) as a regressor."""

from ._estimator import LocalSCMLDissimilarity, SCMLRegressor

__all__ = ["SCMLRegressor", "LocalSCMLDissimilarity"]
