"""Reference computations of Mahalanobis quantities, used only by the tests.

The library computes distances in :mod:`sktaskmet._mahalanobis` and
:mod:`sktaskmet.taskmet._metric_params`; the tests check them against these direct
formulas, and build metrics from matrices with :func:`components_from_matrix`.
"""

import numpy as np
import torch


def squared_mahalanobis(diff, matrix):
    r"""Squared distances :math:`r^\top \Lambda r` for a batch of differences.

    Parameters
    ----------
    diff : torch.Tensor of shape (..., d)
    matrix : torch.Tensor of shape (d, d) or (..., d, d)
        A PSD matrix, shared or one per difference.

    Returns
    -------
    torch.Tensor of shape (...)
        Clamped at zero: rounding can make a PSD quadratic form slightly negative.
    """
    values = torch.einsum("...i,...ij,...j->...", diff, matrix, diff)
    return values.clamp_min(0)


def components_from_matrix(matrix, tol=None):
    r"""A factor :math:`L` with :math:`L^\top L = M` for a symmetric PSD matrix :math:`M`.

    Uses the eigendecomposition :math:`M = V \operatorname{diag}(w) V^\top`,
    :math:`L = \operatorname{diag}(\sqrt{\max(w, 0)}) V^\top`; eigenvalues below
    ``-tol`` mean the matrix is not PSD.

    Parameters
    ----------
    matrix : ndarray of shape (d, d)
    tol : float, optional
        Tolerance for negative eigenvalues, relative to the largest magnitude; defaults to
        ``d * eps`` of the dtype times 10.

    Returns
    -------
    ndarray of shape (d, d)
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"the metric matrix must be square; got shape {matrix.shape}.")
    sym = (matrix + matrix.T) / 2
    w, V = np.linalg.eigh(sym)
    scale = max(float(np.max(np.abs(w), initial=0.0)), np.finfo(w.dtype).tiny)
    tol = 10 * matrix.shape[0] * np.finfo(w.dtype).eps if tol is None else tol
    if w.min(initial=0.0) < -tol * scale:
        raise ValueError(
            f"the metric matrix is not positive semi-definite (smallest eigenvalue {w.min():.3g})."
        )
    return (np.sqrt(np.clip(w, 0, None))[:, None] * V.T).astype(matrix.dtype, copy=False)
