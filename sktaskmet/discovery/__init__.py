"""Agreement score of labelings, task discovery and the adversarial splits it implies."""

__all__ = []
