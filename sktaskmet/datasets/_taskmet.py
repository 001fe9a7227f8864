"""Synthetic decision-focused learning problems: cubic top-k, portfolio, budget, CartPole."""

import numbers

import numpy as np
from sklearn.utils import check_random_state

__all__ = [
    "make_cubic_topk",
]


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _check_nonnegative(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a real number >= 0; got {value!r}.")
    return float(value)


def make_cubic_topk(n_instances=400, n_items=50, noise=0.0, random_state=None):
    r"""The cubic top-1 problem of the TaskMet and LODL papers.

    Each decision instance has ``n_items`` items with one feature
    :math:`x \sim U[-1, 1]` and value :math:`y = 10 (x^3 - 0.65 x)` (plus Gaussian noise of
    standard deviation ``noise``). The downstream task picks the item with the largest
    predicted value (:class:`sktaskmet.tasks.TopK` with ``k=1``). The best item sits near
    :math:`x = 1`, but a least-squares line through the cubic has a negative slope
    (about -0.5) and picks the worst one.

    Parameters
    ----------
    n_instances : int, default=400
        Number of decision instances.
    n_items : int, default=50
        Items per instance.
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to ``y``.
    random_state : int, RandomState instance or None, default=None
        Seed of the draws.

    Returns
    -------
    X : ndarray of shape (n_instances * n_items, 1)
        The feature x of each item, instance after instance.
    y : ndarray of shape (n_instances * n_items,)
        The item values.
    groups : ndarray of shape (n_instances * n_items,)
        The instance id (0 to ``n_instances - 1``) of each row.

    Examples
    --------
    >>> from sktaskmet.datasets import make_cubic_topk
    >>> X, y, groups = make_cubic_topk(n_instances=4, n_items=5, random_state=0)
    >>> X.shape, y.shape, groups[:7]
    ((20, 1), (20,), array([0, 0, 0, 0, 0, 1, 1]))
    """
    n_instances = _check_int(n_instances, "n_instances", 1)
    n_items = _check_int(n_items, "n_items", 2)
    noise = _check_nonnegative(noise, "noise")
    rng = check_random_state(random_state)
    x = rng.uniform(-1.0, 1.0, size=n_instances * n_items)
    y = 10.0 * (x**3 - 0.65 * x)
    if noise > 0:
        y = y + noise * rng.standard_normal(y.shape)
    groups = np.repeat(np.arange(n_instances), n_items)
    return x.reshape(-1, 1), y, groups
