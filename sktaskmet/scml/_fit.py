r"""The part of a global SCML fit shared by :class:`SCMLRegressor` and :class:`SCMLClassifier`.

Input checks that the solver needs (points that differ, magnitudes whose squared distances
are representable), neighbour counts fitted to the data, the basis construction by name,
and the solve on rescaled data with the weights mapped back to the units of X.
"""

import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .._backend import to_numpy, to_tensor
from ._bases import (
    HIGH_DIMENSION,
    check_basis_array,
    default_n_basis,
    identity_basis,
    local_lda_basis,
    normalize_rows,
    random_basis,
    reduced_lda_basis,
    triplet_diff_basis,
)
from ._objective import metric_factor
from ._solver import rda_global

__all__ = [
    "as_fit_dtype",
    "prediction_dtype",
    "check_spread",
    "fit_neighbor_counts",
    "global_components",
    "make_basis",
    "solve_global",
    "triplet_scale",
]


# The values of the ``dtype`` parameter of the SCML estimators.
FIT_DTYPES = ("auto", "float32", "float64")


def as_fit_dtype(X, dtype):
    """X in the floating-point type the fit computes in (a copy only when it changes).

    ``"auto"`` is float32 above ``HIGH_DIMENSION`` features and X's own dtype otherwise:
    on embedding-like data (3,000 to 30,000 rows of 384 features) float32 halved the CPU
    time of a fit and its memory above the imports, and its test errors were within the
    spread of random seeds of the float64 ones (doc/benchmarks/scml_scale.rst). Below,
    fits are cheap and keep the precision they were given.
    """
    if dtype == "auto":
        target = np.float32 if X.shape[1] > HIGH_DIMENSION else X.dtype
    else:
        target = np.dtype(dtype)
    return X.astype(target, copy=False)


def prediction_dtype(fit_dtype, query_dtype):
    """The dtype a prediction computes in: the lower precision of the fit and the query.

    A float32 fit (the default above ``HIGH_DIMENSION`` features) predicts float64 queries
    in float32: a float64 copy of its training rows and of the query-by-training distance
    blocks would double the memory of a prediction without making it more accurate than
    the fit. The result is returned in the query's dtype.
    """
    if np.dtype(fit_dtype) == np.float32 or np.dtype(query_dtype) == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def check_spread(X):
    r"""Raise a ``ValueError`` naming X when SCML cannot learn from its geometry.

    SCML learns from differences :math:`x_a - x_p` and squared distances. Identical rows
    (for instance all zeros) have no difference to learn from, and entries so large (or so
    small) that a squared distance overflows (or underflows) in the dtype of X would turn
    the metric into infinities (or zeros). Both are reported here rather than as a failure
    deep in a factorisation.
    """
    spread = float(np.max(np.ptp(X, axis=0))) if X.shape[0] > 0 else 0.0
    if spread == 0.0:
        raise ValueError(
            "X has identical rows (for instance all zeros): SCML learns a metric from the "
            "differences between points, and these have none."
        )
    info = np.finfo(X.dtype)
    largest = float(np.max(np.abs(X)))
    # Squared distances sum d squared differences of up to twice the largest entry.
    if largest > math.sqrt(float(info.max) / (4 * X.shape[1])) / 16:
        raise ValueError(
            f"X has entries as large as {largest:.3g}: their squared distances overflow "
            f"{X.dtype}. Rescale X (for instance with sklearn.preprocessing.StandardScaler)."
        )
    if spread < math.sqrt(float(info.tiny)) * 16:
        raise ValueError(
            f"X spreads over only {spread:.3g}: its squared distances underflow {X.dtype}. "
            "Rescale X (for instance with sklearn.preprocessing.StandardScaler)."
        )


def fit_neighbor_counts(k_genuine, k_impostor, n_available):
    """Genuine and impostor counts clipped so that they fit in ``n_available`` neighbours.

    Counts that fit are returned unchanged. Otherwise both shrink in proportion (each at
    least 1), so that a small data set still gives triplets with the balance asked for.
    """
    if n_available < 2:
        raise ValueError(
            f"SCML needs at least 3 samples (one anchor, one genuine neighbour and one "
            f"impostor); X has {n_available + 1}."
        )
    if k_genuine + k_impostor <= n_available:
        return int(k_genuine), int(k_impostor)
    genuine = max(1, min(k_genuine, n_available * k_genuine // (k_genuine + k_impostor)))
    return int(genuine), int(max(1, min(k_impostor, n_available - genuine)))


def make_basis(kind, n_basis, X, triplets, generator, subspace_labels, local_labels, target=None):
    """The basis set named by ``kind`` (or given as an array), as unit rows on X's device.

    ``subspace_labels`` and ``local_labels`` are the classes of the discriminant subspace
    and of the local LDAs (``"lda"`` only; :func:`._bases.reduced_lda_basis` above
    ``HIGH_DIMENSION`` features, :func:`._bases.local_lda_basis` on ``local_labels`` below).
    ``target`` is the continuous target of a regression, None for class labels.
    """
    n, d = X.shape
    if not isinstance(kind, str):
        array = check_basis_array(kind, d, to_numpy(X[:0]).dtype)
        return normalize_rows(to_tensor(array, X.device), "basis")
    if kind == "identity":
        return identity_basis(d, dtype=X.dtype, device=X.device)
    if kind == "lda" and d > HIGH_DIMENSION:
        return reduced_lda_basis(
            X, subspace_labels, local_labels, triplets, n_basis, generator, target=target
        )
    if kind == "lda":
        return local_lda_basis(X, local_labels, n_basis, generator)
    if n_basis is None:
        n_basis = default_n_basis(kind, n, d)
    if kind == "random":
        return random_basis(n_basis, d, generator, dtype=X.dtype, device=X.device)
    return triplet_diff_basis(X, triplets, n_basis, generator)


def triplet_scale(X, triplets, sample=4096):
    """Root of the median squared anchor-impostor distance: the natural unit of the hinge."""
    rows = triplets[:: max(1, triplets.shape[0] // sample)]
    sq = ((X[rows[:, 0]] - X[rows[:, 2]]) ** 2).sum(1)
    scale = torch.sqrt(torch.median(sq))
    if not bool(scale > 0):
        scale = torch.ones((), dtype=X.dtype, device=X.device)
    return scale


def solve_global(X, triplets, basis, solver_options, stacklevel=3):
    """Global SCML on ``X / scale``; returns ``(weights for X, scale, SolverResult)``.

    The hinge margin of 1 fixes the scale of the weights; solving on X / scale makes beta
    and gamma mean the same whatever the units of X (w on X is w' / scale^2). Warns when
    every weight is zero. ``solver_options`` are :func:`._solver.rda_global`'s; its
    ``fitted_attributes``, if any, receives the weights for X.
    """
    scale = triplet_scale(X, triplets)
    describe = solver_options.get("fitted_attributes")
    if describe is not None:
        solver_options = dict(
            solver_options, fitted_attributes=lambda coef: describe(coef / scale**2)
        )
    result = rda_global(X / scale, triplets, basis, **solver_options)
    weights = result.coef / scale**2
    if not bool((weights > 0).any()):
        warnings.warn(
            "every basis weight is zero: the sparsity penalty beta is too strong for this "
            "data (or max_iter too small). The learned metric is zero and neighbours are "
            "arbitrary; decrease beta.",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
    return weights, scale, result


def global_components(basis, weights):
    """The factor :math:`L` of the learned metric as a numpy array."""
    return to_numpy(metric_factor(basis, weights))
