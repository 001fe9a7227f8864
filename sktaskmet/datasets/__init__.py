"""Generators of the problems that the examples and benchmarks reproduce."""

from ._taskmet import (
    make_budget_allocation,
    make_cartpole_distractors,
    make_cubic_topk,
    make_portfolio,
)

__all__ = [
    "make_cubic_topk",
    "make_portfolio",
    "make_budget_allocation",
    "make_cartpole_distractors",
]
from ._multitask import SubsetFineTuner, make_multitask_digits
from ._surrogate import make_task_interactions

__all__ = ["make_task_interactions", "make_multitask_digits", "SubsetFineTuner"]
from ._discovery import make_class_split_tasks, make_random_labelings

__all__ = ["make_class_split_tasks", "make_random_labelings"]
