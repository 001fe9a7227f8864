"""Sparse compositional metric learning (global and local) as a regressor."""

__all__ = []
