"""Downstream decision tasks for :class:`~sktaskmet.TaskMetRegressor` and DFL.

A task gives a differentiable relaxed task loss for training and hard decisions, their
quality and the optimal and random references for evaluation. See :ref:`decision_tasks`.
:class:`DecisionQualityScorer` scores any regressor by the decisions its predictions lead
to, for model selection with scikit-learn.
"""

from .taskmet._linear_problems import Knapsack, LinearProgram, PyEPOTask, ShortestPath
from .taskmet._linear_tasks import LinearDecisionTask
from .taskmet._scoring import DecisionQualityScorer, RegretScorer, normalized_regret
from .taskmet._tasks import BudgetAllocation, CallableTask, Portfolio, StateReward, Task, TopK

__all__ = [
    "Task",
    "TopK",
    "Portfolio",
    "BudgetAllocation",
    "CallableTask",
    "StateReward",
    "DecisionQualityScorer",
    # decisions by linear and integer programs
    "LinearDecisionTask",
    "LinearProgram",
    "ShortestPath",
    "Knapsack",
    "PyEPOTask",
    "RegretScorer",
    "normalized_regret",
]
