"""Task attribution with kernel and linear surrogate models of subset performance."""

__all__ = []
