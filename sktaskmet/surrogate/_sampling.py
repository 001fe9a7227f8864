"""Sampling task subsets and evaluating a set function on them, in parallel.

A surrogate model of subset performance is fitted on pairs ``(s, F(s))`` where ``s`` is
an indicator vector over the training tasks and ``F(s)`` is, for instance, the loss on a
target task of a model trained on the tasks in ``s``. :func:`sample_subsets` draws the
indicator vectors; :func:`evaluate_subsets` computes ``F`` on each of them through
:class:`joblib.Parallel`, so the (usually expensive) retraining runs on as many workers as
the active joblib backend offers: local processes by default, or a dask.distributed or ray
cluster with ``joblib.parallel_backend("dask")`` / ``joblib.parallel_backend("ray")``.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, validate_params

from .._validation import check_allocation
from ._evaluation import evaluate_subsets

__all__ = ["sample_subsets", "evaluate_subsets"]


@validate_params(
    {
        "n_tasks": [Interval(Integral, 1, None, closed="left")],
        "n_subsets": [Interval(Integral, 1, None, closed="left")],
        "p": [Interval(Real, 0, 1, closed="both"), None],
        "size": [Interval(Integral, 0, None, closed="left"), None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def sample_subsets(n_tasks, n_subsets, p=None, size=None, random_state=None):
    """Draw random task subsets as rows of a 0/1 indicator matrix.

    Two sampling schemes are offered:

    * **Bernoulli** (``p``): each task enters each subset independently with probability
      ``p``. This is the design under which the bias of a linear surrogate is analysed
      (see the user guide): the larger ``p``, the closer the sampled subsets are to the
      full set and the smaller the bias of leave-one-out estimates around it.
    * **Fixed size** (``size``): each subset holds exactly ``size`` tasks, drawn uniformly
      without replacement, e.g. ``k`` demonstrations out of ``n_tasks`` candidates.

    Rows are drawn independently of each other, so a subset may appear more than once and,
    under Bernoulli sampling, the empty subset may appear (with probability
    ``(1 - p) ** n_tasks`` per row). Both are legitimate draws of the sampling design that
    the surrogates' theory assumes; deduplicate with ``np.unique(S, axis=0)`` if retraining
    is too expensive to repeat a subset.

    Parameters
    ----------
    n_tasks : int
        Number of training tasks (columns).
    n_subsets : int
        Number of subsets (rows).
    p : float in [0, 1], default=None
        Inclusion probability of Bernoulli sampling. When both ``p`` and ``size`` are
        None, ``p=0.5`` (uniform over all ``2 ** n_tasks`` subsets).
    size : int, default=None
        Number of tasks in each subset, at most ``n_tasks``. Mutually exclusive with ``p``.
    random_state : int, RandomState instance or None, default=None
        Seed of the draw; an int gives the same subsets every time.

    Returns
    -------
    subsets : ndarray of shape (n_subsets, n_tasks), dtype float64
        ``subsets[i, k] == 1.0`` when task ``k`` belongs to subset ``i``, else ``0.0``.

    Examples
    --------
    >>> from sktaskmet.surrogate import sample_subsets
    >>> S = sample_subsets(5, 3, size=2, random_state=0)
    >>> S.shape, S.sum(axis=1).tolist()
    ((3, 5), [2.0, 2.0, 2.0])
    """
    if p is not None and size is not None:
        raise ValueError(
            f"Give either p (Bernoulli sampling) or size (fixed-size subsets), not both; "
            f"got p={p!r} and size={size!r}."
        )
    check_allocation("n_subsets and n_tasks", (n_subsets, n_tasks))
    rng = check_random_state(random_state)
    if size is None:
        p = 0.5 if p is None else float(p)
        return (rng.uniform(size=(n_subsets, n_tasks)) < p).astype(np.float64)
    if size > n_tasks:
        raise ValueError(f"size={size} exceeds n_tasks={n_tasks}: a subset holds at most n_tasks.")
    # The `size` smallest of n_tasks i.i.d. uniforms mark a uniformly random size-subset.
    ranks = np.argsort(rng.uniform(size=(n_subsets, n_tasks)), axis=1)
    subsets = np.zeros((n_subsets, n_tasks))
    np.put_along_axis(subsets, ranks[:, :size], 1.0, axis=1)
    return subsets
