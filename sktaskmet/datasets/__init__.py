"""Generators of the problems that the examples and benchmarks reproduce."""

from ._surrogate import make_task_interactions

__all__ = ["make_task_interactions"]
