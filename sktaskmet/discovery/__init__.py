"""Agreement score of labelings, task discovery and the adversarial splits it implies."""

from ._agreement import AgreementScorer
from ._networks import SmallCNN, SmallResNet
from ._task_discovery import TaskDiscovery, random_network_tasks

__all__ = ["AgreementScorer", "TaskDiscovery", "random_network_tasks", "SmallCNN", "SmallResNet"]
