"""sktaskmet: task-driven metric and model learning for scikit-learn, on PyTorch.

Estimators
----------
Each method family lives in its own subpackage; the public estimators are re-exported here.
"""

__version__ = "0.1.0.dev0"

from .discovery import AgreementScorer, TaskDiscovery, random_network_tasks
from .scml import SCMLClassifier, SCMLRegressor
from .surrogate import GradientSubsetEstimator, KernelSurrogate, LinearSurrogate
from .taskmet import DFLRegressor, TaskMetRegressor

__all__ = [
    "__version__",
    # TaskMet and its baseline
    "TaskMetRegressor",
    "DFLRegressor",
    # Sparse compositional metric learning
    "SCMLRegressor",
    "SCMLClassifier",
    # Task attribution
    "KernelSurrogate",
    "LinearSurrogate",
    "GradientSubsetEstimator",
    # Agreement score and task discovery
    "AgreementScorer",
    "TaskDiscovery",
    "random_network_tasks",
]
