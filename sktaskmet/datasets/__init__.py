"""Generators of the problems that the examples and benchmarks reproduce."""

from ._discovery import make_class_split_tasks, make_random_labelings

__all__ = ["make_class_split_tasks", "make_random_labelings"]
