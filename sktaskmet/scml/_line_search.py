r"""The exact line search of the global solver: the best overall scale of a weight vector.

:math:`F(\alpha w)` is convex and piecewise linear in :math:`\alpha`; its minimiser is one
of the kinks :math:`-1/\Delta_t` and comes from one sort of the negative margins, or, on
the CPU, from a partial sort certified against the full sort's rounding (see
:func:`best_scale`).
"""

import math

import numpy as np
import torch

__all__ = ["UNDECIDED", "best_scale", "kink_by_selection", "kink_by_sorting"]

# Target size of the strided sample that locates the kink of the line search (see
# kink_by_selection): sorting it costs a few microseconds, and its estimate of the kink's
# rank is then good to a few per cent of the negatives.
KINK_SAMPLE = 2048
# The bracket of ranks sorted around the estimated crossing: this many standard deviations
# of the estimate (a strided sample's rank error grows like the square root of the rank,
# in sample units) plus a fixed slack in sample units for small ranks.
BRACKET_DEVIATIONS = 4
BRACKET_SLACK = 8
# How many rounding bounds gamma_k (|S| + |P_k|), gamma_k ~ (k + 2) eps, the slopes on
# both sides of the crossing must clear 0 by: each of the two ways of summing the prefix
# may be off by one bound, so 2 would do; 4 leaves room for the estimate of gamma_k.
ROUNDING_SAFETY = 4
# What kink_by_selection returns when it cannot certify the kink: the caller sorts.
UNDECIDED = object()


def best_scale(margins, l1, beta, scratch=None):
    r"""The minimiser :math:`\alpha^\star > 0` of :math:`F(\alpha w)`, exactly.

    With :math:`\Delta_t = d_w(a, p) - d_w(a, n)`,
    :math:`F(\alpha w) = \frac{1}{N}\sum_t [1 + \alpha\Delta_t]_+ + \alpha\beta\lVert w\rVert_1`
    is convex and piecewise linear in :math:`\alpha`. For :math:`\alpha > 0` the active
    hinges are those with :math:`\Delta_t > -1/\alpha`: with :math:`\Delta` sorted
    ascending, a suffix :math:`\{t \ge k\}` of it, and the slope there is
    :math:`R_k / N + \beta\lVert w\rVert_1` with :math:`R_k = \sum_{j \ge k}\Delta_{(j)}`.
    The slope grows with :math:`\alpha`, so the minimum is at the kink
    :math:`\alpha = -1/\Delta_{(k-1)}` where it turns non-negative. Written with the
    total :math:`S = \sum_t \Delta_t + N\beta\lVert w\rVert_1` and the prefix sums
    :math:`P_k = \sum_{j < k}\Delta_{(j)}` of the negative margins, ascending, :math:`k` is
    the first index with :math:`S - P_k \ge 0`: one sort and one cumulative sum
    (:func:`kink_by_sorting`). On the CPU, :func:`kink_by_selection` finds the same
    :math:`k` from a partial sort, and leaves the rare cases it cannot certify to the
    sort.

    Parameters
    ----------
    margins : torch.Tensor of shape (N,)
        :math:`\Delta_t` of every triplet.
    l1 : float
        :math:`\lVert w\rVert_1`.
    beta : float
    scratch : torch.Tensor of shape (N,), optional
        Work space for the partial sort on the CPU (else one is allocated).

    Returns
    -------
    float or None
        :math:`\alpha^\star`, or None when :math:`F` grows from :math:`\alpha = 0` on (no
        scale of ``w`` beats :math:`w = 0`).
    """
    total = margins.sum() + margins.shape[0] * beta * l1
    if margins.device.type == "cpu":
        work = None if scratch is None else scratch.numpy()
        scale = kink_by_selection(margins.numpy(), total.numpy(), work)
        if scale is not UNDECIDED:
            return scale
    return kink_by_sorting(margins, total)


def kink_by_sorting(margins, total):
    """:func:`best_scale` by a full sort of the negative margins."""
    ordered = sorted_negatives(margins)  # only the negative margins have kinks
    n_negative = ordered.shape[0]
    if n_negative == 0:
        return None
    # slopes[k] = N * (slope of F while the suffix k is active) = S - P_k, for
    # k = 0 .. n_negative; increasing in k, and slopes[n_negative] >= 0.
    prefix = torch.cat([ordered.new_zeros(1), ordered.cumsum(0)])
    slopes = total - prefix
    if bool(slopes[0] >= 0):
        return None
    k = int(torch.searchsorted(slopes, slopes.new_zeros(())))  # first k with slope >= 0
    k = min(max(k, 1), n_negative)
    return float(-1.0 / ordered[k - 1])


def kink_by_selection(values, total, scratch=None):
    r""":func:`best_scale` from a partial sort, or ``UNDECIDED``.

    The kink's rank :math:`k` is where the prefix sums :math:`P_k` of the sorted negatives
    pass :math:`S`; only the negatives of rank near :math:`k` need sorting. A sorted
    strided sample estimates :math:`k`; two selections (``np.partition``, linear time)
    split off the values below a bracket of ranks around it and those inside it, and
    only the bracket is sorted: :math:`P_k` is then the sum of the values below plus a
    cumulative sum over the bracket.

    Those sums add in another order than the sort's cumulative sum, so they may differ from
    it by rounding: at most :math:`\gamma_k (|S| + |P_k|)` with
    :math:`\gamma_k \approx k\,\epsilon` for either. The slope :math:`S - P_k` is
    increasing in exact arithmetic, so where the slopes just before and at the crossing
    are farther from 0 than twice that bound, both computations put the crossing at the
    same :math:`k`, and the kink, a value of the data, is the same number. Otherwise
    (the bracket missed the crossing, the margin is too thin, or a value is not finite)
    this returns ``UNDECIDED`` and the caller sorts.

    Parameters
    ----------
    values : numpy.ndarray of shape (N,)
        The margins :math:`\Delta_t`.
    total : numpy.ndarray of shape ()
        :math:`S`, in the dtype of ``values`` (the arithmetic below stays in that dtype,
        as the sort's does).
    scratch : numpy.ndarray of shape (N,), optional
        Where the values are copied and partially sorted in place (else a new array).
    """
    n = values.shape[0]
    if not np.isfinite(total):
        return UNDECIDED
    n_negative = int(np.count_nonzero(values < 0))
    if n_negative == 0 or total >= 0:  # no kink, or F grows from alpha = 0 on
        return None
    stride = max(1, n // KINK_SAMPLE)
    sample = np.sort(values[::stride])
    estimate = np.cumsum(sample[: np.searchsorted(sample, 0)])
    estimate *= stride
    # Estimated rank of the crossing, in sample units, and a bracket of a few standard
    # deviations of that estimate around it.
    guess = int(np.searchsorted(-estimate, -total))
    width = BRACKET_DEVIATIONS * math.sqrt(guess + 1) + BRACKET_SLACK
    low = int(max(0.0, guess - width) * stride)
    high = min(n_negative, int((guess + 1 + width) * stride))
    if high <= low:
        return UNDECIDED
    work = np.empty_like(values) if scratch is None else scratch[:n]
    np.copyto(work, values)
    if low > 0:
        work.partition(low)  # in place: the `low` smallest first
    below = work[:low].sum() if low > 0 else values.dtype.type(0)
    rest = work[low:]
    if high - low < rest.shape[0]:
        rest.partition(high - low - 1)
    bracket = rest[: high - low]
    bracket.sort()
    prefix = np.cumsum(bracket)  # P_k for k = low + 1 .. high
    prefix += below
    slopes = total - prefix
    start = total - below  # the slope at k = low
    crossing = slopes >= 0
    j = int(np.argmax(crossing))
    if start >= 0 or not crossing[j]:
        return UNDECIDED  # the crossing lies outside the bracket
    before = slopes[j - 1] if j > 0 else start
    k = low + 1 + j
    rounding = (k + 2) * np.finfo(values.dtype).eps * (abs(float(total)) + abs(float(prefix[j])))
    bound = ROUNDING_SAFETY * rounding
    if not (before < -bound and slopes[j] >= bound):
        return UNDECIDED
    return float(-1.0 / bracket[j])  # the k-th smallest margin


def sorted_negatives(values):
    """The negative entries, ascending; with numpy on the CPU (several times faster there)."""
    if values.device.type == "cpu":
        ordered = torch.from_numpy(np.sort(values.numpy()))
    else:
        ordered = torch.sort(values).values
    return ordered[: int(torch.searchsorted(ordered, ordered.new_zeros(())))]
