"""Indicator vectors of task subsets: from and to the lists of chosen task ids that
experiments log, and the check that a subset holds indicators or task weights."""

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, validate_params

__all__ = ["ids_to_indicators", "indicators_to_ids", "check_subset_weights"]


def check_subset_weights(S, name):
    """Raise a ValueError naming ``name`` when an entry of S lies outside [0, 1].

    Parameters
    ----------
    S : ndarray
        Subsets as task indicators (0/1) or task weights, already a numeric array.
    name : str
        The name of the argument in the message.
    """
    if S.size and (S.min() < 0.0 or S.max() > 1.0):
        raise ValueError(
            f"{name} must hold task indicators (0/1) or task weights in [0, 1]; got values "
            f"in [{S.min():.4g}, {S.max():.4g}]."
        )


@validate_params(
    {"id_lists": ["array-like"], "n_tasks": [Interval(Integral, 1, None, closed="left"), None]},
    prefer_skip_nested_validation=True,
)
def ids_to_indicators(id_lists, n_tasks=None):
    """Indicator matrix of subsets given as lists of task (or demonstration) ids.

    Experiments usually log, for every run, which tasks or in-context demonstrations it
    used, e.g. ``[[40, 7, 1, 47], [17, 15, 14, 8], ...]``; surrogates are fitted on the
    0/1 matrix with row :math:`i` the indicator vector of run :math:`i`.

    Parameters
    ----------
    id_lists : sequence of sequences of int
        Task ids of each subset, in ``0 .. n_tasks - 1``; the lists may differ in length
        and may be empty. An id repeated within one list is an error (an indicator
        records membership, not multiplicity).
    n_tasks : int, default=None
        Number of tasks (columns); None means the largest id plus one.

    Returns
    -------
    S : ndarray of shape (n_subsets, n_tasks), dtype float64
        ``S[i, j] = 1`` when task ``j`` is in subset ``i``, else 0.

    See Also
    --------
    indicators_to_ids : The inverse.

    Examples
    --------
    >>> from sktaskmet.surrogate import ids_to_indicators
    >>> ids_to_indicators([[0, 2], [1], []], n_tasks=4)
    array([[1., 0., 1., 0.],
           [0., 1., 0., 0.],
           [0., 0., 0., 0.]])
    """
    lists = [_check_id_list(ids, i) for i, ids in enumerate(id_lists)]
    if not lists:
        raise ValueError("id_lists must hold at least one subset; got none.")
    largest = max((int(ids.max()) for ids in lists if ids.size), default=-1)
    if n_tasks is None:
        if largest < 0:
            raise ValueError("every id list is empty: give n_tasks.")
        n_tasks = largest + 1
    elif largest >= n_tasks:
        raise ValueError(f"id_lists holds id {largest}, out of range for n_tasks={n_tasks}.")
    S = np.zeros((len(lists), n_tasks))
    for row, ids in enumerate(lists):
        S[row, ids] = 1.0
    return S


def _check_id_list(ids, row):
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(
            f"id_lists[{row}] must be a flat sequence of task ids; got shape {ids.shape}."
        )
    if ids.size == 0:
        return ids.astype(np.intp)
    is_integral = np.issubdtype(ids.dtype, np.integer) or (
        np.issubdtype(ids.dtype, np.floating) and np.all(ids == np.round(ids))
    )
    if not is_integral:
        raise TypeError(f"id_lists[{row}] must hold integer task ids; got {ids.tolist()}.")
    ids = ids.astype(np.intp)
    if ids.min() < 0:
        raise ValueError(f"id_lists[{row}] holds a negative id ({ids.min()}).")
    if np.unique(ids).size != ids.size:
        raise ValueError(f"id_lists[{row}] repeats an id: {ids.tolist()}.")
    return ids


@validate_params({"S": ["array-like"]}, prefer_skip_nested_validation=True)
def indicators_to_ids(S):
    """Task ids of every subset of an indicator matrix.

    Parameters
    ----------
    S : array-like of shape (n_subsets, n_tasks)
        0/1 indicator vectors (e.g. from :meth:`~sktaskmet.KernelSurrogate.select`; a 1-D
        array is one subset).

    Returns
    -------
    id_lists : list of ndarray of int
        Sorted ids of the tasks in each subset (a single array for 1-D input).

    Examples
    --------
    >>> from sktaskmet.surrogate import indicators_to_ids
    >>> indicators_to_ids([[1, 0, 1, 0], [0, 0, 0, 0]])
    [array([0, 2]), array([], dtype=int64)]
    """
    S = np.asarray(S, dtype=np.float64)
    if S.ndim not in (1, 2):
        raise ValueError(f"S must be 1-D or 2-D; got shape {S.shape}.")
    if not np.all((S == 0) | (S == 1)):
        raise ValueError(
            "S must hold 0/1 indicators; task weights strictly between 0 and 1 have no id list."
        )
    if S.ndim == 1:
        return np.flatnonzero(S).astype(np.int64)
    return [np.flatnonzero(row).astype(np.int64) for row in S]
