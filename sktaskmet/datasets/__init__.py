"""Generators of the problems that the examples and benchmarks reproduce."""

from ._multitask import SubsetFineTuner, make_multitask_digits

__all__ = ["make_multitask_digits", "SubsetFineTuner"]
