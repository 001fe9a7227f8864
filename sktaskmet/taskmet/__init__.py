"""TaskMet: task-driven metric learning for model learning, its tasks and baselines."""

__all__ = []
