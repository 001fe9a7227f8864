"""Cross-validation splitters."""

from ._adversarial import AdversarialSplit

__all__ = ["AdversarialSplit"]
