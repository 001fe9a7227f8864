"""How far a queried subset lies from the subsets a surrogate was fitted on.

A surrogate is a regressor on indicator vectors; asked about a subset unlike every training
subset it extrapolates, and its answer reflects its prior (the intercept, the kernel's decay)
more than the data. A common case: every in-context-learning prompt holds 4 of 50
demonstrations, and the attribution "around the full set" queries subsets of 49 or 50.

The distance is the squared Euclidean distance :math:`\\|s - s'\\|^2`, which on 0/1
indicator vectors is the Hamming distance (the number of tasks in which two subsets differ)
and is also what the RBF kernel of :class:`~sktaskmet.KernelSurrogate` decays with. A query
is compared with its nearest training subset, and that distance with the spread of the
training subsets themselves: the median distance of a training subset to its nearest other
(distinct) training subset.
"""

import warnings

import numpy as np

__all__ = ["ExtrapolationWarning", "nearest_distance", "training_spread"]

# A query farther from every training subset than this many times the training spread
# triggers an ExtrapolationWarning.
EXTRAPOLATION_RATIO = 2.0

# The spread is estimated on at most this many training subsets (evenly spaced rows), which
# bounds its cost at that many rows times n_subsets times n_tasks.
_MAX_SPREAD_ROWS = 1000


class ExtrapolationWarning(UserWarning):
    """A surrogate was queried far from every subset it was fitted on.

    Raised by attribution, interactions and subset selection when the queried subset's
    distance to the nearest training subset exceeds twice the typical distance between
    neighbouring training subsets. Its predictions there are extrapolation: fit the
    surrogate on subsets closer to the query (e.g. sample with a larger inclusion
    probability), or query around a base set near the training subsets.
    """


def _squared_distances(A, B):
    """||a - b||^2 for every row pair, through inner products (clamped at 0)."""
    sq = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(sq, 0.0)


def nearest_distance(S, S_fit):
    """Squared distance of each row of S to its nearest row of S_fit, shape (len(S),)."""
    return _squared_distances(np.asarray(S, dtype=np.float64), S_fit).min(axis=1)


def training_spread(S_fit):
    """Median squared distance of a training subset to its nearest distinct other subset.

    Returns NaN when fewer than two distinct subsets exist (no spread to compare with).
    """
    S_fit = np.asarray(S_fit, dtype=np.float64)
    rows = np.unique(np.linspace(0, len(S_fit) - 1, _MAX_SPREAD_ROWS).round().astype(int))
    dist = _squared_distances(S_fit[rows], S_fit)
    dist[dist <= 1e-12] = np.inf  # itself and exact duplicates
    nearest = dist.min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    return float(np.median(nearest)) if nearest.size else float("nan")


def warn_if_far(query, S_fit, spread, what, stacklevel=3):
    """Warn with the distances when ``query`` (one subset) is far from all of S_fit."""
    if not np.isfinite(spread):
        return
    distance = float(nearest_distance(query[None], S_fit)[0])
    if distance > EXTRAPOLATION_RATIO * max(spread, 1e-12):
        warnings.warn(
            f"{what} queries a subset at squared distance {distance:.3g} (Hamming distance on "
            f"0/1 indicators) from the nearest training subset, {distance / spread:.1f} times "
            f"the typical distance between neighbouring training subsets ({spread:.3g}): "
            "the surrogate extrapolates there. Fit it on subsets closer to the query, or "
            "query around a base set near the training subsets.",
            ExtrapolationWarning,
            stacklevel=stacklevel,
        )
