"""Generators of the problems that the examples and benchmarks reproduce."""

__all__ = []
