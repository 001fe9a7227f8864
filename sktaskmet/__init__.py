"""sktaskmet: task-driven metric and model learning for scikit-learn, on PyTorch.

Estimators
----------
Each method family lives in its own subpackage; the public estimators are re-exported here.
"""

from .surrogate import GradientSubsetEstimator, KernelSurrogate, LinearSurrogate

__version__ = "0.1.0.dev0"

from .scml import SCMLRegressor
from .taskmet import DFLRegressor, TaskMetRegressor

__all__ = [
    "__version__",
    "DFLRegressor",
    "SCMLRegressor",
    "TaskMetRegressor",
]
__all__ = ["__version__", "KernelSurrogate", "LinearSurrogate"]
__all__ = ["__version__", "KernelSurrogate", "LinearSurrogate", "GradientSubsetEstimator"]
from .discovery import AgreementScorer
from .discovery import AgreementScorer, TaskDiscovery, random_network_tasks

__all__ = ["__version__", "AgreementScorer", "TaskDiscovery", "random_network_tasks"]
