"""Generators of the problems that the examples and benchmarks reproduce."""

from ._taskmet import make_cubic_topk

__all__ = ["make_cubic_topk"]
