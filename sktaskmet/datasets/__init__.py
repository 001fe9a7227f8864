"""Generators of the problems that the examples and benchmarks reproduce."""

from ._multitask import SubsetFineTuner, make_multitask_digits
from ._surrogate import make_task_interactions

__all__ = ["make_task_interactions", "make_multitask_digits", "SubsetFineTuner"]
