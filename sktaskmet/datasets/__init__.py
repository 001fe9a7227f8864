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
