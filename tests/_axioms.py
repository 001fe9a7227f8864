"""Reusable property checks for learned and parameterised metrics.

The estimator test modules call these on their fitted metrics, so that every metric in the
library is held to the same axioms with the same tolerances:

* :func:`assert_distance_axioms`: non-negativity, d(x, x) = 0, symmetry and the triangle
  inequality, for a ``distance(a, b)`` that measures corresponding rows of ``a`` and ``b``.
* :func:`assert_psd`: symmetric, eigenvalues non-negative up to rounding.
* :func:`float_arrays`: a hypothesis strategy of bounded, finite float arrays.

Tolerances are relative to the scale of the problem. A squared distance is a sum of
products whose rounding error is about ``eps * ||M|| * ||u - v||^2``; after the square root
this is at most ``sqrt(eps * ||M||) * ||u - v||``. So a check at scale
``sqrt(||M||) * max ||u - v||`` uses the relative tolerance ``sqrt(100 * eps)``.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def rtol_for(dtype):
    """Relative tolerance of a distance computed in ``dtype`` (see the module docstring)."""
    return float(np.sqrt(100 * np.finfo(np.dtype(dtype)).eps))


def metric_scale(matrix, *points):
    """``sqrt(||M||_2) * max_i ||p_i||`` over the rows of all points: the error scale.

    Parameters
    ----------
    matrix : ndarray of shape (d, d), or None for the Euclidean metric
    *points : ndarrays of shape (n, d)
    """
    norm_m = 1.0 if matrix is None else float(np.linalg.norm(np.asarray(matrix, float), 2))
    largest = max(float(np.abs(np.asarray(p, float)).max(initial=0.0)) for p in points)
    width = np.asarray(points[0]).shape[-1]
    return np.sqrt(norm_m) * 2 * largest * np.sqrt(width) + np.finfo(float).tiny


def assert_distance_axioms(distance, x, y, z, *, scale, rtol):
    """Assert the metric axioms on three aligned batches of points.

    Parameters
    ----------
    distance : callable
        ``distance(a, b)`` returns the distances between corresponding rows of a and b,
        shape (n,).
    x, y, z : ndarray of shape (n, d)
    scale : float
        Error scale of the problem (see :func:`metric_scale`).
    rtol : float
        Relative tolerance (see :func:`rtol_for`).
    """
    d_xy = np.asarray(distance(x, y), dtype=float)
    d_yx = np.asarray(distance(y, x), dtype=float)
    d_yz = np.asarray(distance(y, z), dtype=float)
    d_xz = np.asarray(distance(x, z), dtype=float)
    d_xx = np.asarray(distance(x, x), dtype=float)
    atol = rtol * scale
    for name, values in [("d(x, y)", d_xy), ("d(y, z)", d_yz), ("d(x, z)", d_xz)]:
        assert np.all(np.isfinite(values)), f"{name} is not finite: {values}"
        assert np.all(values >= 0), f"{name} is negative: {values}"
    np.testing.assert_array_equal(d_xx, 0.0, err_msg="d(x, x) is not exactly zero")
    np.testing.assert_allclose(d_xy, d_yx, rtol=rtol, atol=atol, err_msg="d is not symmetric")
    slack = d_xy + d_yz - d_xz + atol
    assert np.all(slack >= 0), (
        f"triangle inequality violated by {-slack.min():.3g} (tolerance {atol:.3g})"
    )


def assert_psd(matrices, *, rtol):
    """Assert that each matrix (shape (d, d) or (n, d, d)) is symmetric PSD up to rounding."""
    matrices = np.asarray(matrices, dtype=float)
    if matrices.ndim == 2:
        matrices = matrices[None]
    scale = np.abs(matrices).max(axis=(1, 2), keepdims=True) + np.finfo(float).tiny
    asymmetry = np.abs(matrices - np.swapaxes(matrices, 1, 2)) / scale
    assert asymmetry.max(initial=0.0) <= rtol, f"not symmetric: {asymmetry.max():.3g}"
    eigenvalues = np.linalg.eigvalsh((matrices + np.swapaxes(matrices, 1, 2)) / 2)
    smallest = (eigenvalues / scale[:, :, 0]).min()
    assert smallest >= -rtol, f"negative eigenvalue {smallest:.3g} (relative to the scale)"


def float_arrays(dtype, shape, bound=10.0):
    """Finite floats of ``dtype`` in [-bound, bound] with the given shape."""
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return hnp.arrays(
        dtype,
        shape,
        elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=width),
    )
