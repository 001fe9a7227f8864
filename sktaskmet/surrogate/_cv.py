"""Cross-validation helpers of the closed-form surrogates: the searched grids and the folds.

:class:`~sktaskmet.KernelSurrogate` and :class:`~sktaskmet.LinearSurrogate` compute every
held-out residual in closed form from one factorisation, which requires folds that partition
the training subsets.
"""

import numpy as np
import torch
from sklearn.model_selection import check_cv

__all__ = ["check_grid", "partition_folds"]


def check_grid(values, name):
    """The searched values of ``name`` as a float64 array, checked to be positive and finite."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"{name} must be a non-empty sequence of positive floats; got {values}.")
    return values


def partition_folds(cv, S, y, device):
    """Held-out index tensors of the folds of ``cv``, checked to partition the subsets."""
    splitter = check_cv(cv, classifier=False)
    folds = [test for _, test in splitter.split(S, y)]
    covered = np.sort(np.concatenate(folds))
    if not np.array_equal(covered, np.arange(len(S))):
        raise ValueError(
            "cv must split the subsets into held-out folds that partition them (KFold, "
            "GroupKFold, ...): the closed-form fold residuals assume each model is trained "
            "on all subsets outside its fold. Use cv=int, 'loo' or a KFold-like splitter."
        )
    return [torch.as_tensor(fold, device=device, dtype=torch.long) for fold in folds]
