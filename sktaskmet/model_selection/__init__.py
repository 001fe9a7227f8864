"""Cross-validation splitters."""

__all__ = []
