"""sktaskmet: task-driven metric and model learning for scikit-learn, on PyTorch.

Estimators
----------
Each method family lives in its own subpackage; the public estimators are re-exported here.
"""

__version__ = "0.1.0.dev0"

from .discovery import AgreementScorer, TaskDiscovery, random_network_tasks

__all__ = ["__version__", "AgreementScorer", "TaskDiscovery", "random_network_tasks"]
