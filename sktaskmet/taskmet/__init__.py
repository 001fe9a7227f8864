"""TaskMet: task-driven metric learning for model learning, its tasks and baselines."""

from ._dfl import DFLRegressor
from ._estimator import TaskMetRegressor

__all__ = ["TaskMetRegressor", "DFLRegressor"]
