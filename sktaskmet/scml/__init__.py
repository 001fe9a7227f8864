"""Sparse compositional metric learning (global and local) as a regressor and a classifier."""

from ._classifier import SCMLClassifier
from ._estimator import LocalSCMLDissimilarity, SCMLRegressor

__all__ = ["SCMLRegressor", "SCMLClassifier", "LocalSCMLDissimilarity"]
