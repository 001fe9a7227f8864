"""Agreement score of labelings, task discovery and the adversarial splits it implies."""

from ._task_discovery import TaskDiscovery, random_network_tasks

__all__ = ["TaskDiscovery", "random_network_tasks"]
