"""Cross-validation helpers of the closed-form surrogates: the searched grids and the folds.

:class:`~sktaskmet.KernelSurrogate` and :class:`~sktaskmet.LinearSurrogate` compute every
held-out residual in closed form from one factorisation, which requires folds that partition
the training subsets.
"""

import numpy as np
import torch
from sklearn.model_selection import KFold, check_cv

__all__ = ["check_grid", "nested_outer_folds", "partition_folds", "partition_indices"]

# Outer folds of a nested search whose inner search is leave-one-out: LOO outside too would
# repeat every search once per subset.
NESTED_LOO_OUTER_FOLDS = 5


def check_grid(values, name):
    """The searched values of ``name`` as a float64 array, checked to be positive and finite."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{name} must be a non-empty sequence of positive floats; got {values}.")
    return values


def partition_indices(cv, S, y):
    """Held-out index arrays of the folds of ``cv``, checked to partition the subsets."""
    splitter = check_cv(cv, classifier=False)
    folds = [test for _, test in splitter.split(S, y)]
    covered = np.sort(np.concatenate(folds))
    if not np.array_equal(covered, np.arange(len(S))):
        raise ValueError(
            "cv must split the subsets into held-out folds that partition them (KFold, "
            "GroupKFold, ...): the closed-form fold residuals assume each model is trained "
            "on all subsets outside its fold. Use cv=int, 'loo' or a KFold-like splitter."
        )
    return folds


def partition_folds(cv, S, y, device):
    """:func:`partition_indices` as index tensors on ``device``."""
    return [
        torch.as_tensor(fold, device=device, dtype=torch.long)
        for fold in partition_indices(cv, S, y)
    ]


def nested_outer_folds(cv, S, y):
    """Held-out index arrays of the outer loop of a nested search with inner ``cv``.

    The outer folds are those of ``cv`` (``NESTED_LOO_OUTER_FOLDS`` unshuffled KFold folds
    for ``"loo"``); each outer training part must still hold enough subsets for the inner
    ``cv``, checked here so that the error names the nesting rather than a fold count.
    """
    n_subsets = len(S)
    if isinstance(cv, str):
        outer = KFold(min(NESTED_LOO_OUTER_FOLDS, n_subsets))
        folds = [test for _, test in outer.split(S)]
        inner_needs = 2
    else:
        folds = partition_indices(cv, S, y)
        inner_needs = check_cv(cv, classifier=False).get_n_splits(S, y)
    smallest = n_subsets - max(len(fold) for fold in folds)
    if smallest < max(2, inner_needs):
        raise ValueError(
            f"per_target_cv='auto' nests the cross-validation: the outer training parts "
            f"hold as few as {smallest} of the {n_subsets} subsets, fewer than the "
            f"{max(2, inner_needs)} the inner cv needs. Use more subsets, fewer folds, or "
            "per_target_cv=True or False."
        )
    return folds
