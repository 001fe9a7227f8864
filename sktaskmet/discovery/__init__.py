"""Agreement score of labelings, task discovery and the adversarial splits it implies."""

from ._agreement import AgreementScorer

__all__ = ["AgreementScorer"]
