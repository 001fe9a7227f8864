"""Generators of the problems that the examples and benchmarks reproduce."""

# SubsetFineTuner is fine-tuning, not data: it lives in sktaskmet.surrogate. Importing it from
# here keeps working for code written against earlier versions; it is not in __all__.
from ..surrogate import SubsetFineTuner  # noqa: F401
from ._decision import make_knapsack, make_shortest_path
from ._discovery import (
    load_digits_images,
    make_class_split_tasks,
    make_random_labelings,
    to_image_arrays,
)
from ._icl import load_icl_coin_flip
from ._multitask import make_multitask_digits
from ._surrogate import make_task_interactions
from ._taskmet import (
    make_budget_allocation,
    make_cartpole_distractors,
    make_cubic_topk,
    make_portfolio,
)

__all__ = [
    # TaskMet problems
    "make_cubic_topk",
    "make_portfolio",
    "make_budget_allocation",
    "make_cartpole_distractors",
    # Decision problems of linear programs (PyEPO's generators)
    "make_shortest_path",
    "make_knapsack",
    # Task attribution
    "make_task_interactions",
    "make_multitask_digits",
    "load_icl_coin_flip",
    # Agreement score and task discovery
    "make_class_split_tasks",
    "make_random_labelings",
    "load_digits_images",
    "to_image_arrays",
]
